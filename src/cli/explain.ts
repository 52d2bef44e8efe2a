/** `trellis explain`: why one request goes where it goes, with the spec lines behind each step. */
import { compileDir, compileFiles } from '../compiler/compile.ts';
import { explain, ExplainError, grpcExplainRequest, renderExplanation, type ExplainRequest } from '../explain/explain.ts';
import { GRPC_METHOD_NAME, GRPC_SERVICE_NAME } from '../spec/grpc.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { printDiagnostics } from './diagnostics-output.ts';
import { EXIT, type CliIo } from './io.ts';

export interface ExplainFlags {
  from: string;
  to: string;
  method: string;
  path: string;
  header: string[];
  /** `package.Service/Method`: a gRPC call instead of `method` and `path`. */
  grpc?: string;
  port?: number;
  rev?: string;
  format: 'text' | 'json';
}

export async function runExplain(dir: string, flags: ExplainFlags, io: CliIo): Promise<number> {
  const headers: Record<string, string> = {};
  for (const h of flags.header) {
    const eq = h.indexOf('=');
    const colon = h.indexOf(':');
    const cut = eq > 0 && (colon < 0 || eq < colon) ? eq : colon;
    if (cut <= 0) {
      io.stderr.write(`trellis explain: --header takes name=value, not "${escapeForTerminal(h)}"\n`);
      return EXIT.usage;
    }
    headers[h.slice(0, cut).trim().toLowerCase()] = h.slice(cut + 1).trim();
  }
  const q = flags.path.indexOf('?');
  let grpc: { service: string; method: string } | undefined;
  if (flags.grpc !== undefined) {
    const cut = flags.grpc.lastIndexOf('/');
    const service = flags.grpc.slice(flags.grpc.startsWith('/') ? 1 : 0, Math.max(cut, 0));
    const method = flags.grpc.slice(cut + 1);
    if (cut <= 0 || !GRPC_SERVICE_NAME.test(service) || !GRPC_METHOD_NAME.test(method)) {
      io.stderr.write(`trellis explain: --grpc takes package.Service/Method, such as shop.reviews.v1.Reviews/GetReviews, not "${escapeForTerminal(flags.grpc)}"\n`);
      return EXIT.usage;
    }
    grpc = { service, method };
  }
  let result;
  if (flags.rev) {
    const { readSpecAtRevision } = await import('../reconciler/git-source.ts');
    const read = await readSpecAtRevision(dir, flags.rev);
    if ('problem' in read) {
      io.stderr.write(`trellis explain: ${escapeForTerminal(read.problem)}\n`);
      return EXIT.failed;
    }
    result = compileFiles(read.files);
  } else result = await compileDir(dir);
  if (!result.mesh) {
    printDiagnostics(io, result.diagnostics, dir, false);
    return EXIT.failed;
  }
  try {
    const request: ExplainRequest = grpc
      ? grpcExplainRequest(flags.from, flags.to, grpc.service, grpc.method, headers, flags.port || undefined)
      : { from: flags.from, to: flags.to, method: flags.method.toUpperCase(), path: q < 0 ? flags.path : flags.path.slice(0, q), query: q < 0 ? '' : flags.path.slice(q + 1), headers, ...(flags.port ? { port: flags.port } : {}) };
    const e = explain(result, request, dir);
    io.stdout.write(flags.format === 'json' ? JSON.stringify(e, null, 2) + '\n' : renderExplanation(e));
    return EXIT.ok;
  } catch (err) {
    if (!(err instanceof ExplainError)) throw err;
    io.stderr.write(`trellis explain: ${escapeForTerminal(err.message)}\n`);
    return EXIT.failed;
  }
}
