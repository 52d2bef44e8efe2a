/**
 * The route plan: what routing decides for one outbound request, as data, before anything
 * is sent: the rule that matches, then a redirect to answer, or the backend to call with
 * the path, header changes and mirrors the rule's and backend's filters ask for. Pure: the
 * same table, request and random draws give the same plan, so it is tested without
 * sockets, and the layers after it (deadline, retry, breaker, pick, attempt) only carry it out.
 */
import type { CompiledBackend, CompiledFilter, CompiledHeaderModifier, CompiledPathModifier, CompiledRule } from '../config/types.ts';
import { pickBackend, type RouteTable } from '../config/router.ts';
import type { Random } from './clock.ts';

/** What routing reads of a request to a service. */
export interface RouteRequest {
  /** The port the app named; undefined: the service's first port. */
  readonly port: number | undefined;
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  /** Query string without the leading `?` ('' when none). */
  readonly query: string;
  /** `host[:port]` as the app sent it (redirects keep its host). */
  readonly authority: string;
  /** Header values by lower-case name. */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

export type MirrorFilter = Extract<CompiledFilter, { type: 'RequestMirror' }>;

export type RoutePlan =
  /** No rule matches: 404 `no_route`, as Gateway API says. */
  | { readonly kind: 'no_route' }
  /** Answer at once with a redirect. */
  | { readonly kind: 'redirect'; readonly rule: CompiledRule; readonly status: number; readonly location: string }
  /** The rule has no backend with weight: 500 `no_backend`. */
  | { readonly kind: 'no_backend'; readonly rule: CompiledRule }
  | {
      readonly kind: 'forward';
      readonly rule: CompiledRule;
      readonly backend: CompiledBackend;
      /** The service port the request is for: the app's (or the service's first), or the backendRef's port. */
      readonly servicePort: number;
      readonly backendPort: number;
      /** Path (rewritten by `URLRewrite`) and query. */
      readonly pathAndQuery: string;
      /** `URLRewrite` hostname, to send as Host instead of the backend's. */
      readonly rewriteHost: string | undefined;
      /** Request header modifiers, rule's then backend's, to apply in order. */
      readonly requestHeaders: readonly CompiledHeaderModifier[];
      /** Response header modifiers, rule's then backend's. */
      readonly responseHeaders: readonly CompiledHeaderModifier[];
      readonly mirrors: readonly MirrorFilter[];
    };

/** Applies a path modifier; `prefix` is the PathPrefix the rule matched (for ReplacePrefixMatch). */
export function rewritePath(path: string, modifier: CompiledPathModifier, prefix: string): string {
  if (modifier.type === 'ReplaceFullPath') return modifier.value;
  const base = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  const rest = path.slice(base.length);
  const joined = modifier.value.endsWith('/') && rest.startsWith('/') ? modifier.value + rest.slice(1) : modifier.value + rest;
  return joined === '' ? '/' : joined;
}

/**
 * Plans one request to the service `table` routes: the first matching rule (Gateway API
 * precedence, compiled in order), then its redirect, or a backend picked by weight (one
 * draw of `random` when there are several) with the rule's filters and then the backend's.
 */
export function planRoute(table: RouteTable, request: RouteRequest, random: Random): RoutePlan {
  const servicePort = request.port ?? table.ports[0]!;
  const rule = table.match({ port: servicePort, method: request.method, path: request.path, headers: request.headers, query: request.query });
  if (!rule) return { kind: 'no_route' };
  const redirect = rule.filters.find((f) => f.type === 'RequestRedirect');
  if (redirect) {
    const host = redirect.hostname ?? request.authority.replace(/:\d+$/, '');
    const path = redirect.path ? rewritePath(request.path, redirect.path, rule.match.path.value) : request.path;
    const location = `${redirect.scheme ?? 'http'}://${host}${redirect.port !== null ? `:${redirect.port}` : ''}${path}${request.query ? `?${request.query}` : ''}`;
    return { kind: 'redirect', rule, status: redirect.statusCode, location };
  }
  const backend = pickBackend(rule.backends, random);
  if (!backend) return { kind: 'no_backend', rule };
  // The rule's filters, then the chosen backend's (most rules have none of either).
  const filters = backend.filters.length === 0 ? rule.filters : rule.filters.length === 0 ? backend.filters : [...rule.filters, ...backend.filters];
  let path = request.path;
  let rewriteHost: string | undefined;
  const requestHeaders: CompiledHeaderModifier[] = [];
  const responseHeaders: CompiledHeaderModifier[] = [];
  const mirrors: MirrorFilter[] = [];
  for (const f of filters) {
    if (f.type === 'RequestHeaderModifier') requestHeaders.push(f.headers);
    else if (f.type === 'ResponseHeaderModifier') responseHeaders.push(f.headers);
    else if (f.type === 'RequestMirror') mirrors.push(f);
    else if (f.type === 'URLRewrite') {
      if (f.path) path = rewritePath(path, f.path, rule.match.path.value);
      if (f.hostname !== null) rewriteHost = f.hostname;
    }
  }
  return {
    kind: 'forward',
    rule,
    backend,
    servicePort,
    backendPort: backend.port ?? servicePort,
    pathAndQuery: request.query ? `${path}?${request.query}` : path,
    rewriteHost,
    requestHeaders,
    responseHeaders,
    mirrors,
  };
}
