/**
 * Small pieces every Trellis HTTP endpoint needs (sidecar admin, reconciler): JSON
 * answers, bounded JSON bodies, bearer tokens and webhook signatures compared in
 * constant time.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Reads a request body of at most `limit` bytes. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export type JsonBody = { ok: true; value: unknown; raw: Buffer } | { ok: false; status: 400 | 413; error: 'invalid_json' | 'body_too_large' };

/** Reads and parses a JSON body of at most `limit` bytes. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<JsonBody> {
  const raw = await readBody(req, limit);
  if (!raw) return { ok: false, status: 413, error: 'body_too_large' };
  try {
    return { ok: true, value: JSON.parse(raw.toString('utf8')), raw };
  } catch {
    return { ok: false, status: 400, error: 'invalid_json' };
  }
}

/** Compares secrets in constant time (digests first, so lengths leak nothing either). */
export function tokensMatch(given: string, expected: string): boolean {
  return timingSafeEqual(createHash('sha256').update(given).digest(), createHash('sha256').update(expected).digest());
}

/** The token of `Authorization: Bearer <token>`; empty when the request carries none. */
export function bearerOf(req: IncomingMessage): string {
  const header = req.headers.authorization ?? '';
  return header.startsWith('Bearer ') ? header.slice(7).trim() : '';
}

/** Whether the request carries `Authorization: Bearer <expected>`. */
export function hasBearer(req: IncomingMessage, expected: string): boolean {
  return tokensMatch(bearerOf(req), expected);
}

/** GitHub-style webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC of the raw body>`. */
export function webhookSignatureValid(raw: Buffer, header: string | string[] | undefined, secret: string): boolean {
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false;
  const expected = `sha256=${createHmac('sha256', secret).update(raw).digest('hex')}`;
  return tokensMatch(header, expected);
}
