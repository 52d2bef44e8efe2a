/**
 * Where an app's outbound call is meant to go, read from the request alone: the
 * authority it named (Host, or the absolute-form URI when the app uses the sidecar as its
 * HTTP proxy), and what that authority means in a mesh of namespaces.
 *
 * Names resolve Kubernetes-style (spec/names.ts `serviceKeyOfHost`): a bare `checkout` is
 * the service of that name in the caller's own namespace; `checkout.shop`,
 * `checkout.shop.svc` and `checkout.shop.svc.cluster.local` are `shop/checkout`. The mesh's
 * trust domain may be added as a DNS suffix (`checkout.shop.trellis.local`). An IP address
 * names no service; the outbound path then looks for an instance with that address.
 */
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { DEFAULT_NAMESPACE, parseServiceKey } from '../spec/names.ts';

/** The destination of one outbound request, as the app named it. */
export interface Target {
  /**
   * The host, lower-case, without port, IPv6 brackets or the mesh's `.<trust domain>`
   * suffix: what service names are resolved from.
   */
  readonly host: string;
  /** The host exactly as named (lower-case, brackets kept, suffix kept): where egress goes. */
  readonly originalHost: string;
  /** The port named; undefined when none was. */
  readonly port: number | undefined;
  /** Path without the query string. */
  readonly path: string;
  /** Query string without the leading `?` ('' when none). */
  readonly query: string;
  /** `host[:port]` as the app sent it (for forwarding headers and redirects). */
  readonly authority: string;
}

/**
 * Splits `host[:port]` (IPv6 in brackets: `[::1]:8080`). Undefined for a malformed
 * authority: an empty host, or a port that is not 1–65535.
 */
export function splitAuthority(authority: string): { readonly host: string; readonly port: number | undefined } | undefined {
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) return undefined;
    host = authority.slice(0, close + 1);
    const rest = authority.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return undefined;
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = authority.lastIndexOf(':');
    host = colon >= 0 ? authority.slice(0, colon) : authority;
    portText = colon >= 0 ? authority.slice(colon + 1) : undefined;
  }
  if (host === '') return undefined;
  const port = portText === undefined ? undefined : /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (port !== undefined && !(port > 0 && port < 65536)) return undefined;
  return { host: host.toLowerCase(), port };
}

/** Where the app meant to go: absolute-form URI (the sidecar as HTTP_PROXY) or Host. Undefined when malformed, and for a target that is neither absolute nor a path (`*`). */
export function parseTarget(req: IncomingMessage, hostSuffix: string): Target | undefined {
  let authority = req.headers.host;
  let pathAndQuery = req.url ?? '/';
  if (pathAndQuery.startsWith('http://')) {
    try {
      const u = new URL(pathAndQuery);
      // URL drops a default port (`:80`); the authority as written keeps what the app named.
      const end = pathAndQuery.indexOf('/', 'http://'.length);
      authority = pathAndQuery.slice('http://'.length, end < 0 ? undefined : end);
      if (authority.includes('@')) authority = u.host;
      pathAndQuery = `${u.pathname}${u.search}`;
    } catch {
      return undefined;
    }
  }
  // Origin form only, after the absolute form above: `OPTIONS *` (asterisk form) asks about
  // the proxy itself and names no resource to forward, and a target like `https://…` or
  // `x` cannot be sent upstream as a path.
  if (!pathAndQuery.startsWith('/')) return undefined;
  if (!authority) return undefined;
  const split = splitAuthority(authority);
  if (!split) return undefined;
  const originalHost = split.host.endsWith('.') ? split.host.slice(0, -1) : split.host;
  let host = originalHost;
  if (host.startsWith('[')) host = host.slice(1, -1);
  else if (host.endsWith(hostSuffix)) host = host.slice(0, -hostSuffix.length);
  const q = pathAndQuery.indexOf('?');
  return { host, originalHost, port: split.port, path: q < 0 ? pathAndQuery : pathAndQuery.slice(0, q), query: q < 0 ? '' : pathAndQuery.slice(q + 1), authority };
}

/**
 * The host name a sidecar puts in `Host` when it calls a meshed instance of service `key`:
 * `name` in the default namespace (what older sidecars expect), `name.namespace`
 * elsewhere; a valid DNS name either way, which the destination's inbound reads only for
 * the port.
 */
export function hostOfServiceKey(key: string): string {
  const { namespace, name } = parseServiceKey(key);
  return namespace === DEFAULT_NAMESPACE ? name : `${name}.${namespace}`;
}

/**
 * The canonical text of an IP address (IPv6 compressed and lower-case, as the URL parser
 * writes it), so `::0001` and `::1` compare equal; null for anything that is not an IP.
 * An IPv6 address with a zone (`fe80::1%eth0`), which URLs cannot carry, is only
 * lower-cased.
 */
export function canonicalIp(text: string): string | null {
  const kind = isIP(text);
  if (kind === 4) return text;
  if (kind !== 6) return null;
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return text.toLowerCase();
  }
}
