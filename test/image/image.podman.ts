/**
 * The trellis image, built and run for real (`npm run test:image`; not part of `npm test`: it
 * builds an image, about 15–30 s, and needs podman).
 *
 * Builds it with scripts/build-image.sh, then runs it with podman as Kubernetes would run it:
 * as its own user (65532), read-only root filesystem, no shell in the image. Inside it:
 * `trellis validate` and `trellis compile` of examples/shop, `trellis ca` for a standalone
 * identity, and `trellis sidecar --config` for checkout, whose /readyz must answer the host
 * (host network, loopback only); `trellis wait-ready` is exec'd into the running container
 * the way the classic sidecar's postStart hook execs it, without a shell; a reconciler
 * container serves a second sidecar container over the control stream.
 *
 * Skipped, with the reason, when podman is missing. Where podman cannot start containers on a
 * machine (some sandboxes: no CAP_SYS_RESOURCE for its default rlimits, cgroup v1/v2 hybrid
 * that crun refuses), the run flags below work around what they can: lower rlimits, runc
 * instead of crun. TRELLIS_PODMAN_ARGS adds more (space-separated).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../', import.meta.url));
const TAG = `localhost/trellis-image-test:${process.pid}`;
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const podman = has('podman');
/** Containers this file started, removed in `after`. */
const containers: string[] = [];

/** Flags for every `podman run`: rlimits any process may set (podman's defaults need CAP_SYS_RESOURCE), plus what `probe` found. */
let runFlags = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096', ...(process.env.TRELLIS_PODMAN_ARGS?.split(' ').filter(Boolean) ?? [])];
/** Why containers cannot run here, when they cannot. */
let cannotRun: string | undefined;
let work: string;

async function podmanRun(args: string[], timeout = 60_000): Promise<{ stdout: string; stderr: string }> {
  return run('podman', ['run', '--rm', ...runFlags, ...args], { timeout, maxBuffer: 16 * 1024 * 1024 });
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function until(what: string, ok: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function readyz(port: number): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${port}/readyz`);
  return r.status === 200 && ((await r.json()) as { ready: boolean }).ready === true;
}

/** A detached container on the host network (loopback only: every listener below binds 127.0.0.1). */
async function startDetached(name: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  containers.push(name);
  await run('podman', ['run', '-d', '--name', name, ...runFlags, '--network=host', '--read-only', ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]), ...args], { timeout: 60_000 });
}

async function logs(name: string): Promise<string> {
  const r = await run('podman', ['logs', name]).catch((e: { stdout?: string; stderr?: string }) => e);
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.slice(-3000);
}

before(async () => {
  // This suite runs on its own (npm run test:image) on machines that can build and run images: anything less is a failure with its reason, never a skip.
  if (!podman) throw new Error('podman is not installed (Debian: apt-get install podman buildah runc)');
  work = mkdtempSync(join(tmpdir(), 'trellis-image-'));
  // The container runs as 65532: let it write here.
  chmodSync(work, 0o777);
  const started = Date.now();
  await run('bash', [join(repo, 'scripts/build-image.sh'), TAG], { timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
  process.stderr.write(`# image built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  // Can this machine run containers at all? crun refuses cgroup v1/v2 hybrid hosts; runc copes.
  const probe = async () => (await podmanRun([TAG, '--version'])).stdout.trim();
  try {
    await probe();
  } catch (err) {
    const message = (err as { stderr?: string }).stderr ?? (err as Error).message;
    if (/hybrid mode/.test(message) && has('runc')) {
      runFlags = ['--runtime', 'runc', ...runFlags];
      await probe().catch((e: { stderr?: string; message: string }) => (cannotRun = `podman run failed with runc too: ${e.stderr ?? e.message}`));
    } else cannotRun = `podman run failed: ${message}`;
  }
  process.stderr.write(`# podman run ${runFlags.join(' ')}${cannotRun ? `: ${cannotRun}` : ''}\n`);
  if (cannotRun) throw new Error(`containers cannot run here: ${cannotRun}`);
});

after(async () => {
  for (const c of containers) await run('podman', ['rm', '-f', c]).catch(() => undefined);
  if (podman) await run('podman', ['rmi', '-f', TAG]).catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the trellis image', () => {
  test('non-root, trellis as the entrypoint, small', async () => {
    const [info] = JSON.parse((await run('podman', ['image', 'inspect', TAG])).stdout) as { Size: number; Config: { User: string; Entrypoint: string[] } }[];
    assert.equal(info!.Config.User, '65532:65532');
    assert.deepEqual(info!.Config.Entrypoint, ['/usr/local/bin/trellis']);
    process.stderr.write(`# image size ${(info!.Size / 1e6).toFixed(1)} MB (uncompressed)\n`);
    // Node 24 alone is 108 MB stripped: a bound that catches dev dependencies or an unstripped node creeping in.
    assert.ok(info!.Size < 230e6, `image is ${info!.Size} bytes`);
  });

  test('trellis --version, validate and compile of examples/shop run inside it (uid 65532, read-only root, no network)', async () => {
    assert.equal((await podmanRun([TAG, '--version'])).stdout.trim(), JSON.parse((await import('node:fs')).readFileSync(join(repo, 'package.json'), 'utf8')).version);
    const id = await podmanRun(['--read-only', '--network=none', '--entrypoint', '/usr/local/bin/node', TAG, '-e', 'console.log(process.getuid(), process.getgid(), require("os").userInfo().username)']);
    assert.equal(id.stdout.trim(), '65532 65532 nonroot');
    const v = await podmanRun(['--read-only', '--network=none', '-v', `${join(repo, 'examples')}:/spec:ro`, TAG, 'validate', '/spec/shop']);
    assert.doesNotMatch(v.stderr, /error/i);
    await podmanRun(['--read-only', '--network=none', '-v', `${join(repo, 'examples')}:/spec:ro`, '-v', `${work}:/work`, TAG, 'compile', '/spec/shop', '-o', '/work/out']);
    // git for the reconciler's clone: the binary and its https helper load (their libraries are in the image).
    const git = await podmanRun(['--read-only', '--network=none', '--entrypoint', '/usr/bin/git', TAG, '--version']);
    assert.match(git.stdout, /^git version /);
    const helper = await podmanRun(['--read-only', '--network=none', '--entrypoint', '/usr/bin/git', TAG, 'ls-remote', 'https://127.0.0.1:1/none.git']).catch((e: { stderr: string }) => e);
    assert.match(helper.stderr, /Failed to connect|Couldn't connect|Connection refused/, 'git-remote-https ran (and found nothing listening)');
  });

  test('a sidecar in the image serves checkout from a compiled config; the host reads its /readyz; trellis wait-ready runs by exec without a shell', async () => {
    const trust = 'shop.trellis.local';
    await podmanRun(['--read-only', '--network=none', '-v', `${work}:/work`, TAG, 'ca', 'init', '/work/ca', '--trust-domain', trust]);
    await podmanRun(['--read-only', '--network=none', '-v', `${work}:/work`, TAG, 'ca', 'issue', '--ca', '/work/ca', '--service', 'checkout', '--trust-domain', trust, '--out', '/work/id']);
    const [admin, inbound, outbound] = [await freePort(), await freePort(), await freePort()];
    const name = `trellis-image-sidecar-${process.pid}`;
    await startDetached(name, ['-v', `${work}:/work:ro`, TAG, 'sidecar', '--config', '/work/out/checkout.json', '--admin', `127.0.0.1:${admin}`, '--inbound', `127.0.0.1:${inbound}`, '--outbound', `127.0.0.1:${outbound}`, '--tls-cert', '/work/id/cert.pem', '--tls-key', '/work/id/key.pem', '--tls-ca', '/work/id/ca.pem']);
    await until('the sidecar in the image to be ready', () => readyz(admin)).catch(async (err: Error) => assert.fail(`${err.message}\n${await logs(name)}`));
    // The classic sidecar's postStart hook: exec ["trellis", "wait-ready", …] — PATH lookup, the script's own #! line, no shell.
    const hook = await run('podman', ['exec', name, 'trellis', 'wait-ready', '--admin', `127.0.0.1:${admin}`, '--timeout', '10s'], { timeout: 30_000 });
    assert.equal(hook.stderr.includes('error'), false, hook.stderr);
  });

  test('a reconciler container serves a sidecar container over the control stream (identity from its CA, config from the spec folder)', async () => {
    const [control, admin, inbound, outbound] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const token = { TRELLIS_CONTROL_TOKEN: `image-test-${process.pid}` };
    const reconciler = `trellis-image-reconciler-${process.pid}`;
    // --read-only: the CA and the sidecar's state go to /tmp, the tmpfs podman mounts (an emptyDir on Kubernetes).
    await startDetached(reconciler, ['-v', `${join(repo, 'examples')}:/spec:ro`, TAG, 'reconcile', '--dir', '/spec/shop', '--listen', `127.0.0.1:${control}`, '--ca-dir', '/tmp/ca'], token);
    const sidecar = `trellis-image-controlled-${process.pid}`;
    await startDetached(sidecar, [TAG, 'sidecar', '--control', `http://127.0.0.1:${control}`, '--service', 'checkout', '--admin', `127.0.0.1:${admin}`, '--inbound', `127.0.0.1:${inbound}`, '--outbound', `127.0.0.1:${outbound}`, '--state-dir', '/tmp/state'], token);
    await until('the controlled sidecar to be ready', () => readyz(admin)).catch(async (err: Error) => assert.fail(`${err.message}\nreconciler: ${await logs(reconciler)}\nsidecar: ${await logs(sidecar)}`));
    // The sidecar turns ready when it applies the config; its acknowledgement reaches the reconciler a moment later.
    let summary = { connected: 0, inSync: 0 };
    await until('the reconciler to count the sidecar in sync', async () => {
      summary = ((await (await fetch(`http://127.0.0.1:${control}/status`)).json()) as { summary: typeof summary }).summary;
      return summary.inSync === 1;
    }, 10_000).catch(() => undefined);
    assert.deepEqual({ connected: summary.connected, inSync: summary.inSync }, { connected: 1, inSync: 1 });
  });
});
