/** `trellis sidecar`: run the data plane next to one service instance. */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../spec/duration.ts';
import { DEFAULT_SIDECAR_OPTIONS, Sidecar, type ListenAddress } from '../sidecar/sidecar.ts';
import { EXIT, type CliIo } from './io.ts';

export interface SidecarFlags {
  config?: string;
  service?: string;
  app: { host: string; port?: number };
  outbound: ListenAddress;
  inbound: ListenAddress;
  admin: ListenAddress;
  adminAllowRemote?: boolean;
  adminTokenFile?: string;
  stateDir?: string;
  drainTimeout: number;
  headerTimeout: number;
  accessLog?: boolean;
}

/** `HOST:PORT`, `:PORT` or `PORT` (host then defaults to 127.0.0.1). */
export function parseListen(value: string): ListenAddress {
  const m = /^(?:(.*):)?(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new InvalidArgumentError('use HOST:PORT or PORT.');
  const host = m[1] ? m[1].replace(/^\[(.*)\]$/, '$1') : '127.0.0.1';
  return { host, port };
}

/** `HOST:PORT` (every request to that port) or `HOST` (each service port's targetPort on that host). */
export function parseApp(value: string): { host: string; port?: number } {
  if (/^\d{1,5}$/.test(value)) return { host: '127.0.0.1', port: Number(value) };
  const m = /^(.*):(\d{1,5})$/.exec(value);
  if (m && !m[1]!.includes(':')) return { host: m[1]!, port: Number(m[2]) };
  if (value === '') throw new InvalidArgumentError('use HOST:PORT or HOST.');
  return { host: value.replace(/^\[(.*)\]$/, '$1') };
}

export function parseDurationFlag(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new InvalidArgumentError('use a duration such as 500ms, 20s or 1m.');
  return ms;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export async function runSidecar(flags: SidecarFlags, io: CliIo): Promise<number> {
  if (!LOOPBACK.test(flags.admin.host) && !flags.adminAllowRemote) {
    io.stderr.write(`trellis sidecar: the admin listener may only bind to loopback (got ${flags.admin.host}); add --admin-allow-remote to bind it elsewhere\n`);
    return EXIT.usage;
  }
  let token = io.env.TRELLIS_ADMIN_TOKEN;
  if (flags.adminTokenFile) {
    try {
      token = readFileSync(flags.adminTokenFile, 'utf8').trim();
    } catch (err) {
      io.stderr.write(`trellis sidecar: cannot read --admin-token-file: ${(err as Error).message}\n`);
      return EXIT.usage;
    }
  }
  const sidecar = new Sidecar({
    ...DEFAULT_SIDECAR_OPTIONS,
    service: flags.service,
    stateDir: flags.stateDir,
    outbound: flags.outbound,
    inbound: flags.inbound,
    admin: flags.admin,
    app: flags.app,
    adminToken: token || undefined,
    drainTimeoutMs: flags.drainTimeout,
    headerTimeoutMs: flags.headerTimeout,
    accessLog: flags.accessLog === true,
  });

  if (flags.config) {
    let input: unknown;
    try {
      input = JSON.parse(readFileSync(flags.config, 'utf8'));
    } catch (err) {
      io.stderr.write(`trellis sidecar: cannot read --config ${flags.config}: ${(err as Error).message}\n`);
      return EXIT.failed;
    }
    const result = sidecar.store.apply(input, 'file');
    if (!result.ok) {
      io.stderr.write(`trellis sidecar: ${flags.config} is not a valid proxy config (${result.code}):\n${result.reasons.map((r) => `  - ${r}`).join('\n')}\n`);
      return EXIT.failed;
    }
  } else {
    const stored = sidecar.store.loadStored();
    if (stored) sidecar.store.apply(stored, 'stored');
    else sidecar.log.warn({ type: 'no_config' }, 'no config yet: requests get 503 not_ready until one is applied');
  }

  try {
    await sidecar.start();
  } catch (err) {
    io.stderr.write(`trellis sidecar: cannot listen: ${(err as Error).message}\n`);
    await sidecar.stop();
    return EXIT.failed;
  }
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      void sidecar.stop().then(resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  return EXIT.ok;
}
