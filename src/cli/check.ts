/**
 * `trellis check`: is Trellis installed and working in this cluster? One line per check
 * (✔ ok, ‼ warning, ✖ failure) with what is wrong and how to fix it; exit 0 when nothing
 * failed (warnings allowed), 1 when something did, 2 for usage errors. `--format json`
 * prints `{ ok, checks: [{ name, status, message, hint }] }` instead.
 */
import { runChecks, kubeReader, type CheckResult } from '../kubernetes/check.ts';
import { KubernetesConfigError, loadKubeConfig } from '../kubernetes/client.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { EXIT, useColor, type CliIo } from './io.ts';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export interface CheckFlags {
  kubeconfig?: string;
  namespace: string;
  format: 'text' | 'json';
  /** Reconciler addresses to ask for /status (repeatable); default: each replica through the API server. */
  reconcilerUrl?: string[];
  /** The webhook's HTTPS address to try. */
  webhookUrl?: string;
}

const SYMBOL = { ok: '✔', warn: '‼', fail: '✖' } as const;
const COLOUR = { ok: '32', warn: '33', fail: '31' } as const;

/**
 * One check as text: the symbol, its name and message on one line, the hint indented below.
 * Messages quote cluster data (names, certificate subjects, replica errors), so both are escaped.
 */
export function renderCheck(r: CheckResult, color: boolean): string {
  const symbol = color ? `\x1b[${COLOUR[r.status]}m${SYMBOL[r.status]}\x1b[0m` : SYMBOL[r.status];
  return `${symbol} ${r.name}  ${escapeForTerminal(r.message)}\n${r.hint ? `    hint: ${escapeForTerminal(r.hint)}\n` : ''}`;
}

/** The closing line: counts, and what the exit code will say. */
export function renderSummary(results: readonly CheckResult[]): string {
  const count = (s: CheckResult['status']) => results.filter((r) => r.status === s).length;
  const failed = count('fail');
  const warnings = count('warn');
  return `${failed === 0 ? 'Trellis is working' : 'Trellis is not working'}: ${count('ok')} ok, ${warnings} warning${warnings === 1 ? '' : 's'}, ${failed} failed\n`;
}

function usage(io: CliIo, message: string): number {
  io.stderr.write(`trellis check: ${message}\n`);
  return EXIT.usage;
}

function isUrl(value: string, protocols: readonly string[]): boolean {
  try {
    return protocols.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

export async function runCheck(flags: CheckFlags, io: CliIo): Promise<number> {
  if (!DNS_LABEL.test(flags.namespace)) return usage(io, `--namespace "${escapeForTerminal(flags.namespace)}" is not a namespace name (a lower-case DNS label)`);
  for (const url of flags.reconcilerUrl ?? []) if (!isUrl(url, ['http:', 'https:'])) return usage(io, `--reconciler-url "${escapeForTerminal(url)}" is not an http(s) URL, such as http://127.0.0.1:15010`);
  if (flags.webhookUrl !== undefined && !isUrl(flags.webhookUrl, ['https:'])) return usage(io, `--webhook-url "${escapeForTerminal(flags.webhookUrl)}" is not an https URL`);

  const json = flags.format === 'json';
  const color = useColor(io, 'stdout');
  const print = (r: CheckResult) => void (json || io.stdout.write(renderCheck(r, color)));
  let results: CheckResult[];
  try {
    const { kubeConfig } = loadKubeConfig({ ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}), env: io.env });
    results = await runChecks(await kubeReader(kubeConfig), { namespace: flags.namespace, ...(flags.reconcilerUrl?.length ? { reconcilerUrls: flags.reconcilerUrl } : {}), ...(flags.webhookUrl ? { webhookUrl: flags.webhookUrl } : {}) }, print);
  } catch (err) {
    // Only the cluster configuration throws here; every check turns its own errors into a result.
    const code = err instanceof KubernetesConfigError ? err.code : 'kubernetes_config_invalid';
    const result: CheckResult = { name: 'kubernetes-api', status: 'fail', message: `no usable cluster configuration (${code}): ${(err as Error).message}`, hint: 'give --kubeconfig FILE or set KUBECONFIG' };
    print(result);
    results = [result];
  }
  const passed = results.every((r) => r.status !== 'fail');
  if (json) io.stdout.write(JSON.stringify({ ok: passed, checks: results }, null, 2) + '\n');
  else io.stdout.write(renderSummary(results));
  return passed ? EXIT.ok : EXIT.failed;
}
