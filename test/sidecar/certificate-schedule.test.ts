/**
 * The certificate client's timers on an injected wall clock: renewal at half of a
 * certificate's life, backoff after a failure, and expiry, without waiting any of them out.
 * The CA is real (the test CA signing the sidecar's real CSR over HTTP on port 0); only
 * time is moved by hand. (The rotation test runs the same with real, short-lived
 * certificates and real TLS.)
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { pino } from 'pino';
import type { CertificateRequest, CertificateResponse } from '../../src/config/control-protocol.ts';
import { spiffeId } from '../../src/identity/spiffe.ts';
import { CertificateClient } from '../../src/sidecar/certificates.ts';
import { ManualWallClock } from '../../src/sidecar/clock.ts';
import { SidecarIdentity } from '../../src/sidecar/identity.ts';
import { SidecarMetrics } from '../../src/sidecar/metrics.ts';
import { credentialFor, testCa } from '../helpers/identity.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const HOUR = 3600_000;

/** Clients stop before the CA servers close (a client's last request must not wait on a closing server). */
const clients: CertificateClient[] = [];
const servers: Array<import('node:http').Server> = [];
after(async () => {
  for (const c of clients) await c.stop();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

/** A mesh CA endpoint: signs each CSR for an hour, or answers 503 while `down`. */
async function startCa(): Promise<{ url: string; answered: () => number; setDown(down: boolean): void }> {
  const ca = await testCa();
  let answered = 0;
  let down = false;
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      answered++;
      if (down) {
        res.writeHead(503).end('down');
        return;
      }
      const body = JSON.parse(text) as CertificateRequest;
      const identity = spiffeId('test.local', body.service);
      void ca.issue(body.csr, identity, HOUR).then((issued) => {
        const answer: CertificateResponse = { identity, certificate: issued.certificatePem, trustBundle: ca.trustBundle, notAfter: issued.notAfter.toISOString() };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, answered: () => answered, setDown: (d) => (down = d) };
}

function client(url: string, clock: ManualWallClock, identity: SidecarIdentity): CertificateClient {
  const c = new CertificateClient({ url, token: 'token', service: 'checkout', node: 'checkout-0', identity, log: pino({ level: 'silent' }), random: () => 0.5, metrics: new SidecarMetrics(), wallClock: clock });
  clients.push(c);
  return c;
}

test('renewal comes due at half the certificate life on the injected clock, not before', async () => {
  const ca = await startCa();
  const clock = new ManualWallClock(Date.now());
  const identity = new SidecarIdentity('checkout', clock);
  const c = client(ca.url, clock, identity);
  c.start();
  await waitFor(() => identity.current !== undefined && clock.sleeping === 1, 'the first certificate, then the wait for its renewal');
  const first = identity.current!;
  // random() = 0.5 takes the jitter out: renewal at exactly half of the life left.
  const renewAt = clock.now() + (first.notAfter - clock.now()) / 2;
  clock.advance(renewAt - clock.now() - 1000);
  assert.equal(clock.sleeping, 1, 'a second before half-life the client still waits');
  assert.equal(ca.answered(), 1);
  clock.advance(1000);
  assert.equal(clock.sleeping, 0, 'at half-life the wait ends');
  await waitFor(() => identity.current !== first && clock.sleeping === 1, 'the renewed certificate');
  assert.equal(ca.answered(), 2);
  assert.notEqual(identity.current!.serialNumber, first.serialNumber);
});

test('after a failure the retry waits its backoff on the injected clock', async () => {
  const ca = await startCa();
  ca.setDown(true);
  const clock = new ManualWallClock(Date.now());
  const identity = new SidecarIdentity('checkout', clock);
  const c = client(ca.url, clock, identity);
  c.start();
  await waitFor(() => ca.answered() === 1 && clock.sleeping === 1, 'the first, failed request, then the backoff');
  // First backoff: 500 ms × (0.5 + random / 2) = 375 ms.
  clock.advance(374);
  assert.equal(clock.sleeping, 1);
  ca.setDown(false);
  clock.advance(1);
  assert.equal(clock.sleeping, 0);
  await waitFor(() => identity.current !== undefined, 'the certificate on the retry');
  assert.equal(ca.answered(), 2);
});

test('a certificate stops being used when the injected clock passes its notAfter', async () => {
  const clock = new ManualWallClock(Date.now());
  const identity = new SidecarIdentity('checkout', clock);
  assert.ok(identity.offer(await credentialFor('checkout', { ttlMs: HOUR })).ok);
  const notAfter = identity.current!.notAfter;
  clock.advance(notAfter - clock.now() - 1);
  assert.ok(identity.current, 'valid until its last millisecond');
  clock.advance(1);
  assert.equal(identity.current, undefined, 'an expired certificate proves nothing');
  assert.equal(identity.offer(await credentialFor('checkout', { ttlMs: 60_000 })).ok, false, 'a certificate already expired by this clock is refused');
});
