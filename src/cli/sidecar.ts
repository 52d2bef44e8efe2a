/** `trellis sidecar`: run the data plane next to one service instance. */
import { readFileSync } from 'node:fs';
import { fixedToken, tokenFromFile, type ControlToken } from '../sidecar/control-token.ts';
import { parseControlUrls } from '../sidecar/control-client.ts';
import { DEFAULT_SIDECAR_OPTIONS, Sidecar, type ListenAddress } from '../sidecar/sidecar.ts';
import type { TracingOptions } from '../sidecar/tracing.ts';
import { EXIT, untilStopped, type CliIo } from './io.ts';
import { isServiceKey } from '../spec/names.ts';
import { parseTcpUpstream, type TcpUpstream } from '../sidecar/tcp-upstream.ts';

export interface SidecarFlags {
  config?: string;
  service?: string;
  app: { host: string; port?: number };
  outbound: ListenAddress;
  inbound: ListenAddress;
  admin: ListenAddress;
  adminAllowRemote?: boolean;
  outboundAllowRemote?: boolean;
  adminTokenFile?: string;
  stateDir?: string;
  drainTimeout: number;
  headerTimeout: number;
  bodyTimeout: number;
  accessLog?: boolean;
  /** Reconciler URLs, each flag value possibly comma-separated (`parseControlUrls`). */
  control?: string[];
  controlTokenFile?: string;
  node?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** OTLP/HTTP collector for traces (tracing.ts); else from the OTEL_EXPORTER_OTLP_* environment. */
  otlpEndpoint?: string;
  /** 0 to 1, as given. */
  traceSampleRatio?: string;
  /** `[host:]port=service:port`, one per flag: local ports that carry a TCP service port. */
  tcpUpstream?: string[];
}


const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** Reads a secret file (trimmed); reports and returns undefined when it cannot. */
export function readSecret(file: string, io: CliIo, flag: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch (err) {
    io.stderr.write(`trellis: cannot read ${flag}: ${(err as Error).message}\n`);
    return undefined;
  }
}

export async function runSidecar(flags: SidecarFlags, io: CliIo): Promise<number> {
  if (!LOOPBACK.test(flags.admin.host) && !flags.adminAllowRemote) {
    io.stderr.write(`trellis sidecar: the admin listener may only bind to loopback (got ${flags.admin.host}); add --admin-allow-remote to bind it elsewhere\n`);
    return EXIT.usage;
  }
  // The outbound listener forwards whatever reaches it with this sidecar's mesh identity
  // (and, with egress passthrough, to any host): bound beyond loopback it is an open proxy
  // into the mesh. The inbound listener may bind anywhere: it is the port other pods call,
  // behind mTLS and the access policy (docs/sidecar.md, Listeners).
  if (!LOOPBACK.test(flags.outbound.host) && !flags.outboundAllowRemote) {
    io.stderr.write(`trellis sidecar: the outbound listener may only bind to loopback (got ${flags.outbound.host}): whoever reaches it calls the mesh as this service; add --outbound-allow-remote to bind it elsewhere\n`);
    return EXIT.usage;
  }
  if (flags.service !== undefined && !isServiceKey(flags.service)) {
    io.stderr.write(`trellis sidecar: --service takes a service key, NAME or NAMESPACE/NAME (lower-case DNS labels), not "${flags.service}"\n`);
    return EXIT.usage;
  }
  let token = io.env.TRELLIS_ADMIN_TOKEN;
  if (flags.adminTokenFile) {
    token = readSecret(flags.adminTokenFile, io, '--admin-token-file');
    if (token === undefined) return EXIT.usage;
  }
  let control: { url: string; token: ControlToken; node?: string } | undefined;
  const controlUrls = flags.control ? parseControlUrls(flags.control) : [];
  for (const url of controlUrls) {
    if (!/^https?:\/\/[^/]/.test(url) || !URL.canParse(url)) {
      io.stderr.write(`trellis sidecar: --control takes reconciler URLs such as http://127.0.0.1:15010, not "${url}"\n`);
      return EXIT.usage;
    }
  }
  if (flags.control) {
    if (controlUrls.length === 0) {
      io.stderr.write('trellis sidecar: --control needs a reconciler URL\n');
      return EXIT.usage;
    }
    if (!flags.service) {
      io.stderr.write('trellis sidecar: --control needs --service NAME (the service this instance belongs to)\n');
      return EXIT.usage;
    }
    let controlToken: ControlToken | undefined;
    if (flags.controlTokenFile) {
      // Read now so a wrong path fails at start; then again for every control request,
      // so a token the kubelet rotated (a projected ServiceAccount token) is the one presented.
      if (readSecret(flags.controlTokenFile, io, '--control-token-file') === undefined) {
        io.stderr.write(`trellis sidecar: --control-token-file ${flags.controlTokenFile} holds no token\n`);
        return EXIT.usage;
      }
      controlToken = tokenFromFile(flags.controlTokenFile);
    } else if (io.env.TRELLIS_CONTROL_TOKEN) controlToken = fixedToken(io.env.TRELLIS_CONTROL_TOKEN);
    if (!controlToken) {
      io.stderr.write('trellis sidecar: --control needs a token: --control-token-file FILE (re-read on every request; on Kubernetes the projected ServiceAccount token) or TRELLIS_CONTROL_TOKEN\n');
      return EXIT.usage;
    }
    // Several replicas travel as the flag's own comma-separated form; the control and certificate clients split it.
    control = { url: controlUrls.join(','), token: controlToken, ...(flags.node ? { node: flags.node } : {}) };
  }
  const tlsFiles = [flags.tlsCert, flags.tlsKey, flags.tlsCa].filter((f) => f !== undefined).length;
  if (tlsFiles !== 0 && tlsFiles !== 3) {
    io.stderr.write('trellis sidecar: a standalone identity needs all of --tls-cert, --tls-key and --tls-ca\n');
    return EXIT.usage;
  }
  const tracing = tracingOf(flags, io);
  if (tracing === 'usage') return EXIT.usage;
  const tcpUpstreams: TcpUpstream[] = [];
  for (const value of flags.tcpUpstream ?? []) {
    const parsed = parseTcpUpstream(value);
    if (typeof parsed === 'string') {
      io.stderr.write(`trellis sidecar: ${parsed}\n`);
      return EXIT.usage;
    }
    // Like the outbound port: whoever reaches it calls the mesh as this service.
    if (!LOOPBACK.test(parsed.host) && !flags.outboundAllowRemote) {
      io.stderr.write(`trellis sidecar: a --tcp-upstream listener may only bind to loopback (got ${parsed.host}); add --outbound-allow-remote to bind it elsewhere\n`);
      return EXIT.usage;
    }
    tcpUpstreams.push(parsed);
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
    bodyTimeoutMs: flags.bodyTimeout,
    accessLog: flags.accessLog === true,
    ...(control ? { control } : {}),
    ...(tlsFiles === 3 ? { certificateFiles: { cert: flags.tlsCert!, key: flags.tlsKey!, ca: flags.tlsCa! } } : {}),
    ...(tracing ? { tracing } : {}),
    ...(tcpUpstreams.length > 0 ? { tcpUpstreams } : {}),
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

  // SIGTERM is handled from before the listeners open: the sidecar logs `listening` (and
  // serves) while the rest of its start (identity files, control stream) is still under
  // way, and a signal in that window must drain it, not kill it.
  let starting: Promise<unknown> = Promise.resolve();
  const stopped = untilStopped(async () => {
    await starting.catch(() => undefined);
    await sidecar.stop();
  });
  try {
    await (starting = sidecar.start());
  } catch (err) {
    io.stderr.write(`trellis sidecar: cannot listen: ${(err as Error).message}\n`);
    await sidecar.stop();
    return EXIT.failed;
  }
  await stopped;
  return EXIT.ok;
}

/**
 * Tracing from the flags, else from the environment OpenTelemetry's SDKs read:
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the traces URL itself) or OTEL_EXPORTER_OTLP_ENDPOINT
 * (a base URL, `/v1/traces` added). Undefined when none names a collector: tracing is off.
 */
function tracingOf(flags: SidecarFlags, io: CliIo): TracingOptions | undefined | 'usage' {
  const ratio = Number(flags.traceSampleRatio ?? '1');
  if (flags.traceSampleRatio?.trim() === '' || !Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
    io.stderr.write(`trellis sidecar: --trace-sample-ratio takes a number from 0 to 1, not "${flags.traceSampleRatio}"\n`);
    return 'usage';
  }
  const tracesEndpoint = io.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  const baseEndpoint = io.env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  const [endpoint, source] = flags.otlpEndpoint !== undefined ? [flags.otlpEndpoint, '--otlp-endpoint'] : tracesEndpoint ? [tracesEndpoint, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] : baseEndpoint ? [baseEndpoint, 'OTEL_EXPORTER_OTLP_ENDPOINT'] : [undefined, ''];
  if (endpoint === undefined) return undefined;
  if (!/^https?:\/\/[^/]/.test(endpoint) || !URL.canParse(endpoint)) {
    io.stderr.write(`trellis sidecar: ${source} takes an http(s) URL of an OTLP/HTTP collector such as http://127.0.0.1:4318, not "${endpoint}"\n`);
    return 'usage';
  }
  // The traces variable names the whole URL; the base one and the flag a collector's root.
  return { url: source === 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' ? endpoint : tracesUrl(endpoint), sampleRatio: ratio };
}

/** The OTLP/HTTP traces URL of a collector's base URL: `/v1/traces` added, unless the path already ends with it. */
export function tracesUrl(endpoint: string): string {
  const url = new URL(endpoint);
  if (!url.pathname.endsWith('/v1/traces')) url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/traces`;
  return url.href;
}
