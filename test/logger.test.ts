/** Secrets never reach a log line, whatever a log call passes. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../src/logger.ts';

test('tokens, secrets, private keys and authorization headers are censored', () => {
  const lines: string[] = [];
  const log = createLogger({ component: 'test' }, {}, { write: (line: string) => void lines.push(line) });
  log.info({ token: 't-1', secret: 's-1', privateKeyPem: '-----BEGIN PRIVATE KEY-----', authorization: 'Bearer a-1', req: { headers: { authorization: 'Bearer a-2' } }, control: { token: 't-2' }, service: 'checkout' }, 'hello');
  const line = lines.join('');
  for (const secret of ['t-1', 's-1', 'PRIVATE KEY', 'a-1', 'a-2', 't-2']) assert.ok(!line.includes(secret), `${secret} leaked: ${line}`);
  assert.equal((JSON.parse(line) as { service: string }).service, 'checkout', 'other fields stay');
});
