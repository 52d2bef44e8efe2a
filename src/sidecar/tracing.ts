/**
 * Traces: one span for every request a sidecar proxies, exported through OpenTelemetry's
 * trace SDK and its OTLP/HTTP exporter (JSON) to a collector.
 *
 * - An inbound request gets a SERVER span, an outbound one a CLIENT span, each parented on
 *   the trace context the request came with: W3C `traceparent`, else B3 (`x-b3-*` headers
 *   or the single `b3` header). Without one, the span starts a new trace.
 * - The request passed on carries the span's own context in `traceparent` (and in the B3
 *   form it came with, kept consistent), so the next hop's span is its child, and the app
 *   behind an inbound span sees that span as its parent.
 * - Spans wait in a batch processor's bounded queue (full: new spans are dropped, never
 *   waited for) and are sent on a timer; an export that fails is logged once, never seen by
 *   traffic. Stopping the sidecar sends what is queued, within a bound.
 *
 * This module is loaded only when tracing is configured (sidecar.ts imports it
 * dynamically), and it loads the OpenTelemetry packages itself with dynamic imports, so an
 * untraced sidecar, bundled or not, never loads the SDK. The request paths see only the
 * `SidecarTracer` and `RequestSpan` interfaces (type imports, erased).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import type { Span } from '@opentelemetry/api';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import type { TimerClock } from './clock.ts';

export interface TracingOptions {
  /** Where spans are POSTed, over OTLP/HTTP with JSON bodies: the collector's traces URL (`http://collector:4318/v1/traces`). */
  readonly url: string;
  /**
   * Share of new traces recorded, from 0 to 1. A request that arrives with a trace context
   * follows the caller's sampled flag instead, so a trace is recorded whole or not at all.
   */
  readonly sampleRatio: number;
  /** How often queued spans are sent, in ms. Default 5000 (the SDK's). */
  readonly exportIntervalMs?: number;
  /** Spans held for export at most; beyond it new spans are dropped. Default 2048. */
  readonly maxQueueSize?: number;
}

/** What a span records of its request when it ends; a `RequestRecord` has this shape. */
export interface SpanOutcome {
  readonly source: string;
  readonly destination: string;
  readonly route: string;
  /** A proxy error code, or `-` when the response came from upstream. */
  readonly flags: string;
  /** Where the request went: `address:port` of the endpoint (the last attempt's) or of the local app. */
  readonly backend: string | undefined;
  /** Attempts beyond the first. */
  readonly retries: number;
}

/** The span of one request. */
export interface RequestSpan {
  /**
   * Writes this span's context into the headers of the request passed on: `traceparent`,
   * and the B3 headers when the request came with B3 (same trace, this span as the parent).
   */
  inject(headers: Record<string, string | string[]>): void;
  /** Ends the span with the response status and what the record learnt. Call once. */
  end(outcome: SpanOutcome, status: number): void;
}

export interface SidecarTracer {
  /** Starts the span of a request that just arrived; `kind` is `server` for inbound, `client` for outbound. */
  start(kind: 'server' | 'client', method: string, url: string, headers: IncomingHttpHeaders): RequestSpan;
  /** Sends the queued spans (bounded by `SHUTDOWN_BOUND_MS`) and stops exporting. */
  shutdown(): Promise<void>;
}

/** What the tracer is told of the sidecar it runs in. */
export interface TracerContext {
  /** The service key, `name` or `namespace/name`: the spans' `service.name` (and `service.namespace`). */
  readonly service: string;
  readonly log: Logger;
  readonly clock: TimerClock;
}

/**
 * Longest a stopping sidecar waits for its last spans to be sent. Traffic has drained by
 * then; a collector that is down must not keep a pod from terminating for the exporter's
 * own retries (its timeout is 10 s).
 */
export const SHUTDOWN_BOUND_MS = 3000;
/** Time one export request may take, in ms: shorter than the SDK's 30 s, so a stuck collector holds at most one batch. */
const EXPORT_TIMEOUT_MS = 10_000;

/** A trace context read from a request's headers. */
export interface IncomingContext {
  /** 32 lower-case hex digits. */
  readonly traceId: string;
  /** 16 lower-case hex digits: the caller's span. */
  readonly spanId: string;
  readonly sampled: boolean;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const B3_TRACE_ID = /^([0-9a-f]{16}|[0-9a-f]{32})$/;
const SPAN_ID = /^[0-9a-f]{16}$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

function single(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' ? value.trim().toLowerCase() : undefined;
}

/** A W3C Trace Context `traceparent` (version 00 exactly; later versions by their first four fields). */
export function parseTraceparent(value: string | undefined): IncomingContext | undefined {
  const m = value === undefined ? null : TRACEPARENT.exec(value);
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId: traceId!, spanId: spanId!, sampled: (parseInt(flags!, 16) & 1) === 1 };
}

/** B3 trace ids may have 64 bits; OpenTelemetry's have 128, the upper half zero (as Zipkin pads them). */
function padTraceId(id: string): string {
  return id.length === 16 ? `${ZERO_SPAN}${id}` : id;
}

/** B3, single header (`b3: {trace}-{span}[-{sampled}[-{parent}]]`) or multiple (`x-b3-traceid`, …). A request without a sampling decision is taken as sampled. */
export function parseB3(headers: IncomingHttpHeaders): IncomingContext | undefined {
  const b3 = single(headers.b3);
  if (b3 !== undefined) {
    const [traceId, spanId, sampling] = b3.split('-');
    if (traceId === undefined || spanId === undefined || !B3_TRACE_ID.test(traceId) || !SPAN_ID.test(spanId)) return undefined;
    if (padTraceId(traceId) === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
    return { traceId: padTraceId(traceId), spanId, sampled: sampling !== '0' };
  }
  const traceId = single(headers['x-b3-traceid']);
  const spanId = single(headers['x-b3-spanid']);
  if (traceId === undefined || spanId === undefined || !B3_TRACE_ID.test(traceId) || !SPAN_ID.test(spanId)) return undefined;
  if (padTraceId(traceId) === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  const sampled = single(headers['x-b3-sampled']);
  const debug = single(headers['x-b3-flags']) === '1';
  return { traceId: padTraceId(traceId), spanId, sampled: debug || (sampled !== '0' && sampled !== 'false') };
}

/** The context a request continues: its `traceparent` when valid, else its B3 headers. */
export function extractContext(headers: IncomingHttpHeaders): IncomingContext | undefined {
  return parseTraceparent(single(headers.traceparent)) ?? parseB3(headers);
}

/** Which B3 forms a request came with, and its B3 trace id as written (64 or 128 bits). */
interface B3Forms {
  readonly multi: boolean;
  readonly single: boolean;
  readonly traceId: string | undefined;
}

/**
 * Writes `traceparent` for (traceId, spanId), and the B3 forms the request came with, with
 * `parentSpanId` (the caller's span) as their parent. A 64-bit B3 trace id stays 64 bits
 * when the trace is the one it named.
 */
export function injectContext(headers: Record<string, string | string[]>, traceId: string, spanId: string, sampled: boolean, parentSpanId: string | undefined, b3: B3Forms): void {
  headers.traceparent = `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
  if (!b3.multi && !b3.single) return;
  const b3TraceId = b3.traceId !== undefined && b3.traceId.length === 16 && padTraceId(b3.traceId) === traceId ? b3.traceId : traceId;
  if (b3.multi) {
    headers['x-b3-traceid'] = b3TraceId;
    headers['x-b3-spanid'] = spanId;
    if (parentSpanId !== undefined) headers['x-b3-parentspanid'] = parentSpanId;
    else delete headers['x-b3-parentspanid'];
    headers['x-b3-sampled'] = sampled ? '1' : '0';
  }
  if (b3.single) headers.b3 = `${b3TraceId}-${spanId}-${sampled ? '1' : '0'}${parentSpanId === undefined ? '' : `-${parentSpanId}`}`;
}

/**
 * Loads OpenTelemetry and starts exporting to `options.url`. Rejects only when the
 * packages cannot be loaded (not installed); a collector that cannot be reached is logged
 * when exports fail, and traffic goes on.
 */
export async function createTracer(options: TracingOptions, context: TracerContext): Promise<SidecarTracer> {
  const [api, sdk, resources, otlp] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/exporter-trace-otlp-http'),
  ]);
  const slash = context.service.indexOf('/');
  const resource = resources.defaultResource().merge(
    resources.resourceFromAttributes({
      'service.name': slash < 0 ? context.service : context.service.slice(slash + 1),
      ...(slash < 0 ? {} : { 'service.namespace': context.service.slice(0, slash) }),
    }),
  );
  const exporter = reportingExporter(new otlp.OTLPTraceExporter({ url: options.url, timeoutMillis: EXPORT_TIMEOUT_MS }), context.log);
  const maxQueueSize = options.maxQueueSize ?? 2048;
  const provider = new sdk.TracerProvider({
    resource,
    sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(options.sampleRatio) }),
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter,
        maxQueueSize,
        maxExportBatchSize: Math.min(512, maxQueueSize),
        scheduledDelayMillis: options.exportIntervalMs ?? 5000,
        exportTimeoutMillis: EXPORT_TIMEOUT_MS,
      }),
    ],
  });
  const tracer = provider.getTracer('trellis-sidecar');
  const { SpanKind, SpanStatusCode, ROOT_CONTEXT, TraceFlags, trace } = api;
  context.log.info({ type: 'tracing', url: options.url, sampleRatio: options.sampleRatio }, 'sending traces over OTLP/HTTP');

  return {
    start(kind, method, url, headers) {
      const incoming = extractContext(headers);
      const parent = incoming === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, { traceId: incoming.traceId, spanId: incoming.spanId, traceFlags: incoming.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, isRemote: true });
      const span = tracer.startSpan(method, { kind: kind === 'server' ? SpanKind.SERVER : SpanKind.CLIENT, attributes: { 'http.request.method': method, 'url.path': pathOf(url) } }, parent);
      const b3: B3Forms = { multi: headers['x-b3-traceid'] !== undefined, single: headers.b3 !== undefined, traceId: single(headers.b3)?.split('-')[0] ?? single(headers['x-b3-traceid']) };
      return new OtelRequestSpan(span, kind, method, incoming?.spanId, b3, SpanStatusCode.ERROR);
    },
    async shutdown() {
      const bound = new AbortController();
      const timedOut = context.clock.sleep(SHUTDOWN_BOUND_MS, bound.signal).then(() => !bound.signal.aborted);
      const flushed = provider.shutdown().then(() => false, () => false);
      const late = await Promise.race([flushed, timedOut]);
      bound.abort();
      if (late) context.log.warn({ type: 'trace_export_abandoned', boundMs: SHUTDOWN_BOUND_MS }, 'spans still queued at stop were not all sent in time');
    },
  };
}

/** The path of a request target, without its query: origin form (`/a?b`) or absolute form (`http://h/a?b`, an app using the sidecar as its proxy). */
function pathOf(target: string): string {
  if (!target.startsWith('/') && URL.canParse(target)) return new URL(target).pathname;
  const q = target.indexOf('?');
  return q < 0 ? target : target.slice(0, q);
}

class OtelRequestSpan implements RequestSpan {
  readonly #span: Span;
  readonly #kind: 'server' | 'client';
  readonly #method: string;
  readonly #parentSpanId: string | undefined;
  readonly #b3: B3Forms;
  readonly #error: number;

  constructor(span: Span, kind: 'server' | 'client', method: string, parentSpanId: string | undefined, b3: B3Forms, errorCode: number) {
    this.#span = span;
    this.#kind = kind;
    this.#method = method;
    this.#parentSpanId = parentSpanId;
    this.#b3 = b3;
    this.#error = errorCode;
  }

  inject(headers: Record<string, string | string[]>): void {
    const c = this.#span.spanContext();
    injectContext(headers, c.traceId, c.spanId, (c.traceFlags & 1) === 1, this.#parentSpanId, this.#b3);
  }

  end(o: SpanOutcome, status: number): void {
    const span = this.#span;
    if (!span.isRecording()) return span.end();
    span.updateName(`${this.#method} ${o.destination}`);
    span.setAttributes({
      'http.response.status_code': status,
      'trellis.route': o.route,
      'trellis.source.workload': o.source,
      'trellis.destination.service': o.destination,
      'trellis.response_flags': o.flags,
      ...(o.backend === undefined ? {} : { 'trellis.backend': o.backend }),
      ...(this.#kind === 'client' ? { 'trellis.retries': o.retries } : {}),
    });
    // A proxy error (its code in flags) or a 5xx fails the span; a 4xx from upstream is the app's answer.
    if (o.flags !== '-' || status >= 500) {
      const type = o.flags !== '-' ? o.flags : String(status);
      span.setAttribute('error.type', type);
      span.setStatus({ code: this.#error, message: type });
    }
    span.end();
  }
}

/** The exporter, with failures logged when exporting starts to fail and when it recovers (not once per batch). */
function reportingExporter(inner: SpanExporter, log: Logger): SpanExporter {
  let failing = false;
  return {
    export(spans: ReadableSpan[], done) {
      inner.export(spans, (result) => {
        if (result.code !== 0 && !failing) {
          failing = true;
          log.warn({ type: 'trace_export_failed', error: result.error?.message ?? 'failed', spans: spans.length }, 'cannot send traces to the collector; traffic is not affected, spans are dropped until it answers');
        } else if (result.code === 0 && failing) {
          failing = false;
          log.info({ type: 'trace_export_recovered' }, 'traces reach the collector again');
        }
        done(result);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}
