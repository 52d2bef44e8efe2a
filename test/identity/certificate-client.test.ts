/**
 * CertificateClient retry behaviour against a real HTTP server standing in for a mesh CA
 * that answers once and then goes away (503): real certificates, real time. The
 * certificates live two seconds, so the test waits on the clock, polling with a bound.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { spiffeId } from '../../src/identity/spiffe.ts';
import type { CertificateRequest } from '../../src/config/control-protocol.ts';
import { CertificateClient } from '../../src/sidecar/certificates.ts';
import { seededRandom } from '../../src/sidecar/clock.ts';
import { SidecarIdentity } from '../../src/sidecar/identity.ts';
import { SidecarMetrics } from '../../src/sidecar/metrics.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A CA endpoint that signs the first request for `ttlMs` and answers 503 to every later one; `hits` holds each request's time. */
async function flakyCa(ca: MeshCertificateAuthority, ttlMs: number) {
  const hits: number[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hits.push(Date.now());
      if (hits.length > 1) {
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"not_ready"}');
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as CertificateRequest;
      const identity = spiffeId('test.local', body.service);
      void ca.issue(body.csr, identity, ttlMs).then((issued) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ identity, certificate: issued.certificatePem, trustBundle: ca.trustBundle, notAfter: issued.notAfter.toISOString() }));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

describe('CertificateClient', () => {
  test('once its certificate has expired, it backs off while the CA stays away instead of retrying every 100 ms', async () => {
    const ca = await MeshCertificateAuthority.generate('test.local');
    const endpoint = await flakyCa(ca, 2000);
    const identity = new SidecarIdentity('checkout');
    const client = new CertificateClient({
      url: endpoint.url,
      token: 't',
      service: 'checkout',
      node: 'n1',
      identity,
      log: pino({ level: 'silent' }),
      random: seededRandom(7),
      metrics: new SidecarMetrics(),
      minBackoffMs: 500,
      maxBackoffMs: 1000,
    });
    cleanups.push(() => client.stop());
    client.start();
    await waitFor(() => identity.current !== undefined, 'the first certificate', 5000);
    const notAfter = identity.current!.notAfter;
    // Let the certificate expire, then count requests over 1.5 s: with waits of 500–1000 ms there are at most 3.
    const from = notAfter + 500;
    await waitFor(() => Date.now() >= from + 1500, 'the counting window to pass', 10_000);
    const inWindow = endpoint.hits.filter((t) => t >= from && t < from + 1500).length;
    assert.ok(inWindow >= 1, 'it keeps trying');
    assert.ok(inWindow <= 4, `${inWindow} requests in 1.5 s after expiry`);
  });
});
