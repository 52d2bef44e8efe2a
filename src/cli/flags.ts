/** Parsers for flag values shared by several commands; light, so `--help` loads nothing heavy. */
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../spec/duration.ts';

import type { ListenAddress } from '../sidecar/sidecar.ts';

export type { ListenAddress };
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


/** Output formats of `trellis diff`. */
export type DiffFormat = 'text' | 'markdown' | 'json';

/** Parses `--format` of `trellis diff`; anything else is a usage error. */
export function parseDiffFormat(value: string): DiffFormat {
  if (value !== 'text' && value !== 'markdown' && value !== 'json') throw new InvalidArgumentError('use text, markdown or json.');
  return value;
}
