/**
 * Standalone identity: a real sidecar with `certificateFiles` (what `trellis sidecar
 * --tls-cert/--tls-key/--tls-ca` runs), real files rewritten on disk and watched by real
 * chokidar. Every wait polls with a bound; a change that must *not* take effect is
 * observed through the sidecar's own log line for it.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { credentialFor, writeCredentialFiles, type TestCredential } from '../helpers/identity.ts';
import { cleanup, startSidecar, waitFor } from '../helpers/sidecar-harness.ts';

const dirs: string[] = [];
after(async () => {
  await cleanup();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface LogLine {
  readonly type?: string;
  readonly reason?: string;
  readonly [key: string]: unknown;
}

/** A logger whose JSON lines are kept, for waiting on what the sidecar says it did. */
function recordingLogger() {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const waitForLog = (type: string, since: number, what = type) => waitFor(() => lines.slice(since).some((l) => l.type === type), what, 10_000);
  return { lines, logger, waitForLog };
}

const serialOf = (c: TestCredential) => new X509Certificate(c.certificatePem).serialNumber;

async function standaloneSidecar(initial: TestCredential, service = 'checkout') {
  const files = writeCredentialFiles(initial);
  dirs.push(files.dir);
  const log = recordingLogger();
  const running = await startSidecar(undefined, { service, certificateFiles: { cert: files.cert, key: files.key, ca: files.ca }, logger: log.logger });
  return { ...running, files, ...log };
}

describe('certificate files', () => {
  test('the sidecar starts with the identity in the files', async () => {
    const initial = await credentialFor('checkout');
    const s = await standaloneSidecar(initial);
    const current = s.sidecar.identity.current;
    assert.ok(current, 'loaded before start resolves');
    assert.equal(current.serialNumber, serialOf(initial));
    assert.equal(current.identity, 'spiffe://test.local/svc/checkout');
    assert.deepEqual(current.trustBundle, initial.trustBundle);
  });

  test('rewriting the three files with a new certificate swaps the identity', async () => {
    const initial = await credentialFor('checkout');
    const s = await standaloneSidecar(initial);
    assert.equal(s.sidecar.identity.current?.serialNumber, serialOf(initial));
    // A root rollover done through files: a certificate from a new root, and a bundle of both roots.
    const newCa = await MeshCertificateAuthority.generate('test.local');
    const next = await credentialFor('checkout', { ca: newCa });
    const bundle = [...initial.trustBundle, newCa.rootPem];
    writeFileSync(s.files.cert, next.certificatePem);
    writeFileSync(s.files.key, next.privateKeyPem);
    writeFileSync(s.files.ca, bundle.join(''));
    await waitFor(() => s.sidecar.identity.current?.serialNumber === serialOf(next), 'the new certificate to be in use', 10_000);
    assert.deepEqual(s.sidecar.identity.current?.trustBundle, bundle);
    assert.equal(s.sidecar.identity.current?.privateKeyPem, next.privateKeyPem);
    await s.waitForLog('certificate_reloaded', 0);
  });

  test('a key that does not match keeps the old identity; writing its certificate then recovers', async () => {
    const initial = await credentialFor('checkout');
    const s = await standaloneSidecar(initial);
    const before = s.sidecar.identity.current!;
    const next = await credentialFor('checkout');

    // The key first, alone: it belongs to no certificate on disk.
    const since = s.lines.length;
    writeFileSync(s.files.key, next.privateKeyPem);
    await s.waitForLog('certificate_reload_failed', since, 'the refused reload');
    assert.match(s.lines.slice(since).find((l) => l.type === 'certificate_reload_failed')!.reason!, /private key does not belong/);
    assert.equal(s.sidecar.identity.current, before, 'the running identity stays');

    // Then its certificate: the pair is whole again.
    writeFileSync(s.files.cert, next.certificatePem);
    await waitFor(() => s.sidecar.identity.current?.serialNumber === serialOf(next), 'the recovered identity', 10_000);
  });

  test('a certificate for another service is refused and the old identity stays', async () => {
    const initial = await credentialFor('checkout');
    const s = await standaloneSidecar(initial);
    const before = s.sidecar.identity.current!;
    const other = await credentialFor('admin');
    const since = s.lines.length;
    writeFileSync(s.files.key, other.privateKeyPem);
    writeFileSync(s.files.cert, other.certificatePem);
    await waitFor(() => s.lines.slice(since).some((l) => l.type === 'certificate_reload_failed' && /for service "admin"/.test(l.reason ?? '')), 'the refusal of the other service', 10_000);
    assert.equal(s.sidecar.identity.current, before);
  });

  test('files that make no identity at start leave the sidecar without one until they are fixed', async () => {
    const good = await credentialFor('checkout');
    const mismatched = { ...good, privateKeyPem: (await credentialFor('checkout')).privateKeyPem };
    const s = await standaloneSidecar(mismatched);
    assert.equal(s.sidecar.identity.current, undefined);
    assert.ok(s.lines.some((l) => l.type === 'certificate_invalid'), 'the bad start is logged');
    writeFileSync(s.files.key, good.privateKeyPem);
    await waitFor(() => s.sidecar.identity.current?.serialNumber === serialOf(good), 'the fixed identity', 10_000);
  });
});

describe('certificate files replaced the way secret managers replace them', () => {
  test('files replaced by an atomic rename are reloaded', async () => {
    const initial = await credentialFor('checkout');
    const s = await standaloneSidecar(initial);
    const next = await credentialFor('checkout');
    for (const [path, text] of [
      [s.files.key, next.privateKeyPem],
      [s.files.cert, next.certificatePem],
    ] as const) {
      writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    }
    await waitFor(() => s.sidecar.identity.current?.serialNumber === serialOf(next), 'the renamed-in certificate', 10_000);
    // And again: the watch survives the first replacement.
    const third = await credentialFor('checkout');
    for (const [path, text] of [
      [s.files.key, third.privateKeyPem],
      [s.files.cert, third.certificatePem],
    ] as const) {
      writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    }
    await waitFor(() => s.sidecar.identity.current?.serialNumber === serialOf(third), 'the second renamed-in certificate', 10_000);
  });

  test('a Kubernetes secret volume update (the ..data symlink swapped) is reloaded', async () => {
    // Layout of a mounted secret: cert.pem -> ..data/cert.pem, ..data -> ..<timestamp>/.
    const mount = mkdtempSync(join(tmpdir(), 'trellis-secret-'));
    dirs.push(mount);
    const writeVersion = (name: string, c: TestCredential) => {
      mkdirSync(join(mount, name));
      writeFileSync(join(mount, name, 'cert.pem'), c.certificatePem);
      writeFileSync(join(mount, name, 'key.pem'), c.privateKeyPem, { mode: 0o600 });
      writeFileSync(join(mount, name, 'ca.pem'), c.trustBundle.join(''));
    };
    const initial = await credentialFor('checkout');
    writeVersion('..v1', initial);
    symlinkSync('..v1', join(mount, '..data'));
    for (const f of ['cert.pem', 'key.pem', 'ca.pem']) symlinkSync(join('..data', f), join(mount, f));
    const log = recordingLogger();
    const running = await startSidecar(undefined, { service: 'checkout', certificateFiles: { cert: join(mount, 'cert.pem'), key: join(mount, 'key.pem'), ca: join(mount, 'ca.pem') }, logger: log.logger });
    assert.equal(running.sidecar.identity.current?.serialNumber, serialOf(initial));

    const next = await credentialFor('checkout');
    writeVersion('..v2', next);
    symlinkSync('..v2', join(mount, '..data_tmp'));
    renameSync(join(mount, '..data_tmp'), join(mount, '..data'));
    await waitFor(() => running.sidecar.identity.current?.serialNumber === serialOf(next), 'the certificate of the swapped secret', 10_000);
    rmSync(join(mount, '..v1'), { recursive: true });

    // The kubelet does it again at the next renewal.
    const third = await credentialFor('checkout');
    writeVersion('..v3', third);
    symlinkSync('..v3', join(mount, '..data_tmp'));
    renameSync(join(mount, '..data_tmp'), join(mount, '..data'));
    rmSync(join(mount, '..v2'), { recursive: true });
    await waitFor(() => running.sidecar.identity.current?.serialNumber === serialOf(third), 'the certificate of the second swap', 10_000);
  });
});
