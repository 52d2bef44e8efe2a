/** The test harness's own promises, where a broken helper would make other tests flaky rather than fail. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { closedPort } from '../helpers/sidecar-harness.ts';

const servers: Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

test('closedPort: a port outside the kernel ephemeral range, refused, never handed out twice, and not given to later listen(0) servers', async () => {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const ports = await Promise.all(Array.from({ length: 50 }, () => closedPort()));
  assert.equal(new Set(ports).size, ports.length, 'never the same port twice');
  // Issue 16: the port came from listen(0), so the next listen(0) of the same test could get it.
  for (const p of ports) assert.ok(p < low!, `port ${p} is inside the ephemeral range from ${low}, where listen(0) may hand it to another server`);
  for (let i = 0; i < 50; i++) {
    const s = createServer();
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    assert.ok(!ports.includes((s.address() as AddressInfo).port));
  }
  const refused = await new Promise<string>((resolve) => {
    const socket = connect(ports[0]!, '127.0.0.1');
    socket.on('connect', () => resolve('connected'));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
  assert.equal(refused, 'ECONNREFUSED');
});
