/** `trellis dashboard`: serve the dashboard page on this machine, reading a reconciler's data. */
import { startDashboardServer } from '../dashboard/proxy-server.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import type { ListenAddress } from './flags.ts';
import { EXIT, untilStopped, type CliIo } from './io.ts';

export interface DashboardFlags {
  readonly url: string;
  readonly listen: ListenAddress;
}

export async function runDashboard(flags: DashboardFlags, io: CliIo): Promise<number> {
  let server;
  try {
    server = await startDashboardServer({ reconciler: flags.url, host: flags.listen.host, port: flags.listen.port });
  } catch (err) {
    io.stderr.write(`trellis dashboard: cannot listen on ${escapeForTerminal(flags.listen.host)}:${flags.listen.port}: ${escapeForTerminal((err as Error).message)}\n`);
    return EXIT.failed;
  }
  io.stdout.write(`dashboard ${server.url}  (data from the reconciler at ${escapeForTerminal(flags.url)}; Ctrl-C stops)\n`);
  await untilStopped(() => server.close());
  return EXIT.ok;
}
