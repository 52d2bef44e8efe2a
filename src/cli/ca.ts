/** `trellis ca init|issue`: a mesh root and sidecar certificates as files, for standalone sidecars. */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAX_CERT_TTL_MS, MIN_CERT_TTL_MS, MeshCertificateAuthority } from '../identity/ca.ts';
import { spiffeId } from '../identity/spiffe.ts';
import { EXIT, type CliIo } from './io.ts';

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;

export async function runCaInit(dir: string, opts: { trustDomain: string }, io: CliIo): Promise<number> {
  if (!TRUST_DOMAIN.test(opts.trustDomain)) {
    io.stderr.write(`trellis ca init: "${opts.trustDomain}" is not a trust domain (lower-case letters, digits, ".", "-", "_")\n`);
    return EXIT.usage;
  }
  const existing = ['ca.key', 'ca.crt'].map((f) => join(dir, f)).find((f) => existsSync(f));
  if (existing) {
    io.stderr.write(`trellis ca init: ${existing} exists; refusing to replace a root\n`);
    return EXIT.failed;
  }
  await MeshCertificateAuthority.loadOrCreate(dir, opts.trustDomain);
  io.stdout.write(`wrote ${join(dir, 'ca.crt')} and ${join(dir, 'ca.key')} (0600)\n`);
  return EXIT.ok;
}

export interface CaIssueFlags {
  ca: string;
  service: string;
  trustDomain: string;
  out: string;
  ttl: number;
}

export async function runCaIssue(flags: CaIssueFlags, io: CliIo): Promise<number> {
  if (!NAME.test(flags.service) || !TRUST_DOMAIN.test(flags.trustDomain)) {
    io.stderr.write('trellis ca issue: --service must be a service name and --trust-domain a trust domain\n');
    return EXIT.usage;
  }
  if (flags.ttl < MIN_CERT_TTL_MS || flags.ttl > MAX_CERT_TTL_MS) {
    io.stderr.write('trellis ca issue: --ttl must be between 1m and 720h\n');
    return EXIT.usage;
  }
  let ca: MeshCertificateAuthority;
  try {
    ca = await MeshCertificateAuthority.load(readFileSync(join(flags.ca, 'ca.crt'), 'utf8'), readFileSync(join(flags.ca, 'ca.key'), 'utf8'));
  } catch (err) {
    io.stderr.write(`trellis ca issue: cannot load the root from ${flags.ca}: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
  const identity = spiffeId(flags.trustDomain, flags.service);
  const issued = await ca.issueKeyPair(identity, flags.ttl);
  mkdirSync(flags.out, { recursive: true });
  writeFileSync(join(flags.out, 'key.pem'), issued.privateKeyPem, { mode: 0o600 });
  chmodSync(join(flags.out, 'key.pem'), 0o600);
  writeFileSync(join(flags.out, 'cert.pem'), issued.certificatePem);
  writeFileSync(join(flags.out, 'ca.pem'), ca.trustBundle.join(''));
  io.stdout.write(`${identity}: wrote cert.pem, key.pem (0600) and ca.pem to ${flags.out}; expires ${issued.notAfter.toISOString()}\n`);
  return EXIT.ok;
}
