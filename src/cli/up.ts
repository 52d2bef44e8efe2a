/** `trellis up <spec-dir>`: the whole mesh of a spec folder on this machine, with demo apps and traffic. */
import { up } from '../up/up.ts';
import { EXIT, untilStopped, useColor, type CliIo } from './io.ts';

export async function runUp(dir: string, opts: { controlPort: number; rate: number; prometheus?: string }, io: CliIo): Promise<number> {
  const out = (line: string) => io.stdout.write(line + '\n');
  let mesh;
  try {
    mesh = await up({
      dir,
      controlPort: opts.controlPort,
      rate: opts.rate,
      reportEveryMs: 3000,
      report: (text) => out(`\n[${new Date().toISOString().slice(11, 19)}] traffic in the last 3 s\n${text.replace(/^/gm, '  ')}`),
      revisions: (text) => out(`\n${text}`),
      color: useColor(io, 'stdout'),
      ...(opts.prometheus ? { prometheus: opts.prometheus } : {}),
    });
  } catch (err) {
    io.stderr.write(`trellis up: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
  out(`trellis up ${dir}`);
  out(`  reconciler  ${mesh.controlUrl}  watching ${dir}   (trellis status --url ${mesh.controlUrl})`);
  out(`  dashboard   ${mesh.dashboardUrl}   (open it in a browser; or trellis stat --url ${mesh.controlUrl})`);
  if (opts.prometheus) out(`  prometheus  traffic read from ${opts.prometheus}; its scrape config: curl -s ${mesh.controlUrl}/v1/prometheus/config > trellis-prometheus.yml`);
  const width = Math.max(...mesh.instances.map((i) => i.service.length));
  for (const i of mesh.instances) {
    out(
      i.meshed
        ? `  ${i.service.padEnd(width)}  sidecar inbound 127.0.0.1:${i.inbound}  outbound 127.0.0.1:${i.outbound}  admin 127.0.0.1:${i.admin}  app 127.0.0.1:${i.app}`
        : `  ${i.service.padEnd(width)}  no sidecar; demo app at 127.0.0.1:${i.app}`,
    );
  }
  for (const t of mesh.traffic) out(`  traffic     ${t.from} → ${t.to.join(', ')}  (${opts.rate} req/s each, through ${t.from}'s sidecar)`);
  for (const f of mesh.forbidden) out(`  forbidden   ${f.from} → ${f.to} ${f.method} ${f.path}  (its access policy refuses it: expect 403 access_denied)`);
  const mtls = mesh.instances.some((i) => i.meshed) ? '  identity    sidecars hold certificates from a mesh CA made for this run; calls between them use mTLS' : '';
  if (mtls) out(mtls);
  out(`Edit a route under ${dir} (weights, say) and watch the shares move, here and on the dashboard. A revision the mesh refuses is shown with the reason. Ctrl-C stops everything.`);
  await untilStopped(() => (out('stopping…'), mesh.stop()));
  out('stopped');
  return EXIT.ok;
}
