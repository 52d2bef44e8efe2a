/**
 * `trellis inject FILE|-`: the webhook's injection, offline, for manifests kept in git (like
 * `linkerd inject`). Reads multi-document YAML, adds the sidecar to the pod template of each
 * Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and Pod (and of each such item
 * of a List), and prints every document, the others as they were. What happened to each
 * object goes to stderr.
 *
 * `trellis wait-ready`: the postStart hook of a classic (non-native) sidecar. It returns once
 * the proxy's admin `/readyz` answers 200, which holds the app's container back until then
 * (the kubelet starts containers in order and waits for each postStart hook).
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { parseAllDocuments } from 'yaml';
import { controlUrlFor, injectManifest, type KubeObject } from '../kubernetes/inject.ts';
import type { ListenAddress } from './flags.ts';
import { EXIT, type CliIo } from './io.ts';

export interface InjectFlags {
  namespace: string;
  image: string;
  controlNamespace: string;
  controlUrl?: string;
  nativeSidecars: boolean;
}

/** Injects every document of `text` (pure). `lines` say what happened to each object; `errors` are YAML errors, and then nothing is injected. */
export function injectYaml(text: string, flags: InjectFlags): { output: string; lines: string[]; errors: string[] } {
  const docs = parseAllDocuments(text, { uniqueKeys: true });
  const list = Array.isArray(docs) ? docs : [];
  const errors = list.flatMap((d, i) => d.errors.map((e) => `document ${i + 1}: ${e.message}`));
  if (errors.length > 0) return { output: '', lines: [], errors };
  const options = {
    image: flags.image,
    controlUrl: flags.controlUrl ?? controlUrlFor(flags.controlNamespace),
    nativeSidecars: flags.nativeSidecars,
    namespace: flags.namespace,
  };
  const lines: string[] = [];
  let output = '';
  list.forEach((doc, i) => {
    // A document's own text runs from its start (its `---`; for the first, the file's start,
    // so leading comments stay) to the next one's: what is not injected is printed as written.
    const start = i === 0 ? 0 : doc.range[0];
    const source = text.slice(start, list[i + 1]?.range[0] ?? text.length);
    const value = doc.toJS() as unknown;
    let result: ReturnType<typeof injectManifest> | undefined;
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      result = injectManifest(value as KubeObject, options);
      for (const r of result.reports) lines.push(`${r.kind.toLowerCase() || 'document'}${r.name ? `/${r.name}` : ''} ${r.outcome}${r.outcome === 'passed' ? '' : `: ${r.detail}`}`);
    }
    if (output !== '' && !output.endsWith('\n')) output += '\n';
    if (!result?.changed) {
      output += source;
      return;
    }
    // Only the top-level fields that changed are replaced, so comments elsewhere stay.
    for (const [key, v] of Object.entries(result.object)) {
      if (JSON.stringify(v) !== JSON.stringify((value as Record<string, unknown>)[key])) doc.set(key, doc.createNode(v));
    }
    output += (i === 0 ? '' : '---\n') + doc.toString({ lineWidth: 0 }).replace(/^---\n/, '');
  });
  if (output !== '' && !output.endsWith('\n')) output += '\n';
  return { output, lines, errors };
}

export async function runInject(file: string, flags: InjectFlags, io: CliIo): Promise<number> {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    io.stderr.write(`trellis inject: cannot read ${file}: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
  const { output, lines, errors } = injectYaml(text, flags);
  if (errors.length > 0) {
    io.stderr.write(`trellis inject: ${file} is not valid YAML:\n${errors.map((e) => `  ${e}`).join('\n')}\n`);
    return EXIT.failed;
  }
  io.stdout.write(output);
  for (const l of lines) io.stderr.write(`${l}\n`);
  return EXIT.ok;
}

function readyOnce(admin: ListenAddress): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: admin.host, port: admin.port, path: '/readyz', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Polls the admin `/readyz` every 250 ms until 200 (exit 0) or `timeout` ms pass (exit 1). */
export async function runWaitReady(flags: { admin: ListenAddress; timeout: number }, io: CliIo): Promise<number> {
  const until = Date.now() + flags.timeout;
  for (;;) {
    if (await readyOnce(flags.admin)) return EXIT.ok;
    if (Date.now() >= until) {
      io.stderr.write(`trellis wait-ready: the sidecar at ${flags.admin.host}:${flags.admin.port} was not ready within ${flags.timeout} ms\n`);
      return EXIT.failed;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
