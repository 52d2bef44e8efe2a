/** The `--tcp-upstream` flag's value (and the injection annotation's parts): pure, with no sidecar code behind it. */
import { isServiceKey } from '../spec/names.ts';

/** A local port that carries one TCP service port (`--tcp-upstream`). */
export interface TcpUpstream {
  readonly host: string;
  readonly port: number;
  /** Service key (`name` or `namespace/name`, or a host name the mesh resolves). */
  readonly service: string;
  readonly servicePort: number;
}

/** `[host:]port=service:port` (`15432=ledger:7000`, `127.0.0.1:15432=shop/ledger:7000`), or why not. */
export function parseTcpUpstream(value: string): TcpUpstream | string {
  const eq = value.indexOf('=');
  const listen = eq < 0 ? '' : value.slice(0, eq);
  const target = eq < 0 ? '' : value.slice(eq + 1);
  const lc = listen.lastIndexOf(':');
  const host = lc < 0 ? '127.0.0.1' : listen.slice(0, lc);
  const port = Number(lc < 0 ? listen : listen.slice(lc + 1));
  const tc = target.lastIndexOf(':');
  const service = tc < 0 ? '' : target.slice(0, tc);
  const servicePort = Number(target.slice(tc + 1));
  const isPort = (n: number, min: number) => Number.isInteger(n) && n >= min && n <= 65535;
  if (eq < 0 || host === '' || !isPort(port, 0) || !isPort(servicePort, 1) || !isServiceKey(service)) return `--tcp-upstream takes [HOST:]PORT=SERVICE:PORT, such as 127.0.0.1:15432=ledger:7000, not "${value}"`;
  return { host, port, service, servicePort };
}
