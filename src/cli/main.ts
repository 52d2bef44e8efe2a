/**
 * The `trellis` command line: one subcommand per file, each thin (parse flags, call a
 * part, print, return an exit code), loaded only when it runs. Exit codes: 0 success, 1 the command ran and
 * found a problem (an invalid spec, say), 2 usage error.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { parseFormat } from './diagnostics-output.ts';
import { parseApp, parseDiffFormat, parseDurationFlag, parseListen } from './flags.ts';
import { EXIT, type CliIo } from './io.ts';
import type { SidecarFlags } from './sidecar.ts';
import type { ReconcileFlags } from './reconcile.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function formatOption(): Option {
  return new Option('--format <format>', 'output format: text (human, to stderr) or json (to stdout)').default('text').argParser(parseFormat);
}

export function buildProgram(io: CliIo, setCode: (code: number) => void): Command {
  const program = new Command('trellis')
    .description('Trellis: a service mesh whose whole configuration lives in git')
    .version(pkg.version, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride();

  const sub = (name: string) => program.command(name).version(pkg.version, '-V, --version').exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  sub('validate')
    .description('check a mesh spec folder; exit 0 when valid, 1 when not')
    .argument('[dir]', 'spec folder', '.')
    .addOption(formatOption())
    .option('-v, --verbose', 'also print info diagnostics (notes that need no action)')
    .option('--no-traffic-tests', "skip the spec's TrafficTests")
    .action(async (dir: string, opts: { format: 'text' | 'json'; verbose?: boolean; trafficTests: boolean }) => setCode(await (await import('./validate.ts')).runValidate(dir, opts, io)));

  sub('compile')
    .description('compile a mesh spec folder into one proxy config per meshed service')
    .argument('[dir]', 'spec folder', '.')
    .option('-o, --out <outdir>', 'write <service>.json files and index.json here')
    .option('--stdout', 'print every config and the index as one JSON document')
    .addOption(formatOption())
    .option('-v, --verbose', 'also print info diagnostics (notes that need no action)')
    .action(async (dir: string, opts: { out?: string; stdout?: boolean; format: 'text' | 'json'; verbose?: boolean }) => setCode(await (await import('./compile.ts')).runCompile(dir, opts, io)));

  const opt = <T>(flags: string, description: string, parse: (v: string) => T, value: T, shown: string) => new Option(flags, description).argParser(parse).default(value, shown);
  sub('sidecar')
    .description('run the sidecar proxy next to one service instance')
    .option('-c, --config <file>', 'start from this compiled proxy config (trellis compile output)')
    .option('--service <name>', 'the service this sidecar serves, NAME or NAMESPACE/NAME outside the default namespace; configs for another are refused')
    .addOption(opt('--app <host[:port]>', "where the local app listens: HOST:PORT, or HOST to use each port's targetPort", parseApp, { host: '127.0.0.1' }, '127.0.0.1'))
    .addOption(opt('--outbound <[host:]port>', "listener for the app's outbound calls", parseListen, { host: '127.0.0.1', port: 15001 }, '127.0.0.1:15001'))
    .addOption(opt('--inbound <[host:]port>', 'listener for calls from other sidecars', parseListen, { host: '127.0.0.1', port: 15006 }, '127.0.0.1:15006'))
    .addOption(opt('--admin <[host:]port>', 'admin listener (health, metrics, config)', parseListen, { host: '127.0.0.1', port: 15000 }, '127.0.0.1:15000'))
    .option('--admin-allow-remote', 'allow the admin listener to bind to a non-loopback address')
    .option('--outbound-allow-remote', "allow the outbound listener to bind to a non-loopback address (whoever reaches it calls the mesh as this service)")
    .option('--admin-token-file <file>', 'bearer token that admin config writes must present (or TRELLIS_ADMIN_TOKEN)')
    .option('--state-dir <dir>', 'keep the last accepted config here, and start from it when no --config is given')
    .addOption(opt('--drain-timeout <duration>', 'time in-flight requests get to finish on SIGTERM', parseDurationFlag, 20_000, '20s'))
    .addOption(opt('--header-timeout <duration>', 'time a client has to send its request headers (slowloris guard)', parseDurationFlag, 10_000, '10s'))
    .addOption(opt('--body-timeout <duration>', 'time a request body has to arrive in full after its headers, on both listeners (408 request_body_timeout); 0s for none', parseDurationFlag, 30_000, '30s'))
    .option('--access-log', 'log every request as a JSON line')
    .option('--control <url>', 'subscribe to a reconciler for configs, such as http://127.0.0.1:15010 (needs --service); several replicas: repeat the flag or separate URLs by commas, and the sidecar moves to the next when one fails', (v: string, all: string[] | undefined) => [...(all ?? []), v])
    .option('--control-token-file <file>', 'file holding the bearer token for the reconciler, read again for every request so a rotated token is used (on Kubernetes: the projected ServiceAccount token); or set TRELLIS_CONTROL_TOKEN to a fixed shared token')
    .option('--node <id>', 'this instance\'s id at the reconciler (default: host name and inbound port)')
    .option('--tls-cert <file>', 'standalone identity: this service\'s certificate (PEM), reloaded on change; with --control the reconciler\'s CA is used instead when this is left out')
    .option('--tls-key <file>', 'standalone identity: the certificate\'s private key (PEM)')
    .option('--tls-ca <file>', 'standalone identity: the trusted root certificates (PEM)')
    .option('--otlp-endpoint <url>', 'send a span for every request to this OpenTelemetry collector over OTLP/HTTP, such as http://127.0.0.1:4318 (/v1/traces is added); default OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; tracing is off without one')
    .option('--trace-sample-ratio <ratio>', 'share of new traces recorded, 0 to 1 (a caller\'s sampled flag decides for the traces it continues)', '1')
    .option('--tcp-upstream <[host:]port=service:port>', 'listen on a local port that carries one TCP service port (appProtocol tcp), for clients that cannot send CONNECT to the outbound port, such as 127.0.0.1:15432=ledger:7000; repeat for more', (v: string, all: string[] | undefined) => [...(all ?? []), v])
    .action(async (flags: SidecarFlags) => setCode(await (await import('./sidecar.ts')).runSidecar(flags, io)));

  sub('reconcile')
    .description('watch a git branch (or a folder), compile each revision, and push what changed to every sidecar')
    .option('--repo <url>', 'git remote to watch (https, ssh, git, file URLs or a local path)')
    .option('--branch <name>', 'branch to follow', 'main')
    .option('--path <dir>', 'spec folder inside the repo (default: its root)')
    .option('--dir <dir>', 'watch a local folder instead of git (for development)')
    .option('--cache-dir <dir>', 'where the clone is kept (default: ~/.cache/trellis/repos/<hash of the URL>)')
    .addOption(opt('--interval <duration>', 'how often to fetch (with jitter); webhooks fetch at once', parseDurationFlag, 30_000, '30s'))
    .option('--allowed-signers <file>', 'apply only commits signed by a key in this ssh allowed-signers file')
    .addOption(opt('--listen <[host:]port>', 'listener for sidecars, status, metrics and webhooks', parseListen, { host: '127.0.0.1', port: 15010 }, '127.0.0.1:15010'))
    .option('--token-file <file>', 'bearer token sidecars must present (or TRELLIS_CONTROL_TOKEN)')
    .option('--webhook-secret-file <file>', 'secret for POST /hooks/git signatures (or TRELLIS_WEBHOOK_SECRET)')
    .option('--ca-dir <dir>', 'where the mesh CA generated on first start is kept (default: ~/.local/share/trellis/ca)')
    .option('--ca-cert <file>', "the operator's mesh root certificate (PEM), instead of a generated one (needs --ca-key)")
    .option('--ca-key <file>', "the operator's mesh root key (PEM)")
    .option('--ca-secret <[namespace/]name>', 'keep the mesh root in this Kubernetes Secret (tls.crt, tls.key), shared by every replica; the first replica to start creates it under the Lease trellis-ca-bootstrap (needs --kubernetes)')
    .option('--trust-bundle <file>', 'more roots sidecars should trust (PEM), for a root rollover')
    .addOption(opt('--cert-ttl <duration>', 'lifetime of workload certificates (1m to 720h)', parseDurationFlag, 24 * 3600_000, '24h'))
    .option('--kubernetes', 'take endpoints of services with endpoints.kubernetes from EndpointSlices of this cluster')
    .option('--kubeconfig <file>', 'cluster to use with --kubernetes (default: KUBECONFIG, else in-cluster, else ~/.kube/config)')
    .option('--kubernetes-namespace <ns...>', 'watch EndpointSlices only in these namespaces (default: all; needs a ClusterRole)')
    .option('--kubernetes-namespaces-from-spec', 'watch EndpointSlices only in the namespaces the applied spec takes endpoints from (a Role in each is enough)')
    .option('--webhook-listen <[host:]port>', 'also serve the sidecar injection webhook over HTTPS here (needs --webhook-cert, --webhook-key, --inject-image, --inject-control-url)', parseListen)
    .option('--webhook-cert <file>', "the injection webhook's serving certificate (PEM), reloaded when the file changes")
    .option('--webhook-key <file>', "the injection webhook's serving key (PEM)")
    .option('--inject-image <image>', 'trellis image of the sidecars the webhook injects')
    .option('--inject-control-url <url>', 'reconciler address given to injected sidecars, such as http://trellis.trellis-system.svc:15010')
    .action(async (flags: ReconcileFlags) => setCode(await (await import('./reconcile.ts')).runReconcile(flags, io)));

  sub('status')
    .description("show the reconciler's applied and attempted revisions and each sidecar's state; exit 1 when not all in sync")
    .option('--url <url>', 'reconciler address', 'http://127.0.0.1:15010')
    .addOption(formatOption())
    .action(async (opts: { url: string; format: 'text' | 'json' }) => setCode(await (await import('./status.ts')).runStatus(opts, io)));

  sub('stat')
    .description('traffic per service, edge (caller → backend) and route: success rate, requests per second, p50/p95/p99 latency, from what sidecars report to the reconciler')
    .option('--url <url>', 'reconciler address', 'http://127.0.0.1:15010')
    .option('--window <duration>', 'how far back to look (10s to 15m)', '1m')
    .option('--namespace <ns>', 'only services of this namespace')
    .option('--from <service>', 'only calls from this service')
    .option('--to <service>', 'only calls to this service')
    .option('--route <name>', 'only this HTTPRoute')
    .addOption(new Option('--format <format>', 'output format: text or json (both to stdout)').default('text').argParser(parseFormat))
    .action(async (flags: import('./stat.ts').StatFlags) => setCode(await (await import('./stat.ts')).runStat(flags, io)));
  sub('dashboard')
    .description("serve the live dashboard (service graph, golden metrics, splits, revisions) on this machine, reading a reconciler's data; the reconciler serves the same page at /dashboard")
    .option('--url <url>', 'reconciler address', 'http://127.0.0.1:15010')
    .option('--control <url>', 'the same as --url')
    .addOption(opt('--listen <[host:]port>', 'where to serve the page', parseListen, { host: '127.0.0.1', port: 15020 }, '127.0.0.1:15020'))
    .action(async (flags: import('./dashboard.ts').DashboardFlags & { control?: string }) => setCode(await (await import('./dashboard.ts')).runDashboard({ ...flags, url: flags.control ?? flags.url }, io)));
  sub('test')
    .description("run the spec's TrafficTests against the compiled mesh; exit 1 when one fails")
    .argument('[dir]', 'spec folder', '.')
    .addOption(formatOption())
    .action(async (dir: string, opts: { format: 'text' | 'json' }) => setCode(await (await import('./test.ts')).runTest(dir, opts, io)));

  sub('explain')
    .description('trace one request through the compiled mesh: which rule matches and why earlier ones do not, backends, timeouts, retries, policies and the access decision, each with its spec line')
    .argument('[dir]', 'spec folder', '.')
    .requiredOption('--from <service>', 'the calling service')
    .requiredOption('--to <service>', 'the service it calls')
    .option('--method <method>', 'HTTP method', 'GET')
    .option('--path <path>', 'request path, with a query string if any', '/')
    .option('--grpc <service/method>', 'a gRPC call instead of --method and --path, as package.Service/Method (sent as a gRPC client sends it: POST with content-type application/grpc)')
    .option('--header <name=value>', 'a request header (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--port <port>', 'service port called (default: its first port)', (v) => parseListen(v).port)
    .option('--rev <ref>', 'explain the spec as of this git revision of the repository holding DIR (the working tree is not read)')
    .addOption(formatOption())
    .action(async (dir: string, flags: import('./explain.ts').ExplainFlags) => setCode(await (await import('./explain.ts')).runExplain(dir, flags, io)));

  const ca = sub('ca').description('the mesh certificate authority, for sidecars that run without a reconciler (standalone identity files)');
  ca.command('init')
    .description('make a new mesh root: DIR/ca.crt and DIR/ca.key (0600)')
    .argument('<dir>', 'folder for the root')
    .option('--trust-domain <domain>', 'trust domain named in the root', 'trellis.local')
    .action(async (dir: string, opts: { trustDomain: string }) => setCode(await (await import('./ca.ts')).runCaInit(dir, opts, io)));
  ca.command('issue')
    .description("make a key and a certificate for a service's sidecar: OUT/cert.pem, OUT/key.pem (0600), OUT/ca.pem")
    .requiredOption('--ca <dir>', 'folder of the root (trellis ca init)')
    .requiredOption('--service <name>', 'the service the certificate is for')
    .requiredOption('--trust-domain <domain>', "the Mesh's spec.trustDomain")
    .requiredOption('--out <dir>', 'folder to write into')
    .addOption(opt('--ttl <duration>', 'certificate lifetime (1m to 720h)', parseDurationFlag, 24 * 3600_000, '24h'))
    .action(async (opts: import('./ca.ts').CaIssueFlags) => setCode(await (await import('./ca.ts')).runCaIssue(opts, io)));
  sub('diff')
    .description('show how traffic moves between two versions of a spec (git revisions or folders); exit 0 no change, 1 changes, 2 errors')
    .requiredOption('--base <ref|dir>', 'the version before: a git revision, or a spec folder')
    .requiredOption('--head <ref|dir>', 'the version after: a git revision, or a spec folder')
    .option('--path <dir>', 'spec folder inside the repository, for revisions (default: the repository root)')
    .option('--repo <dir>', 'the git repository, for revisions (default: the current folder)')
    .addOption(new Option('--format <format>', 'output: text, markdown (a pull-request comment) or json').default('text').argParser((v: string) => parseDiffFormat(v)))
    .action(async (flags: import('./diff.ts').DiffFlags) => setCode(await (await import('./diff.ts')).runDiff(flags, io)));

  sub('up')
    .description('run the whole mesh of a spec folder on this machine: reconciler, sidecars, demo apps and light traffic')
    .argument('[dir]', 'spec folder', 'examples/shop')
    .addOption(opt('--control-port <port>', 'reconciler port', (v) => parseListen(v).port, 15010, '15010'))
    .addOption(opt('--rate <n>', 'requests per second from each entry service to each service it calls', (v) => Math.max(1, Math.min(100, Number(v) || 5)), 5, '5'))
    .option('--prometheus <url>', 'read the dashboard\'s and trellis stat\'s traffic from this Prometheus (its scrape config: GET <reconciler>/v1/prometheus/config)')
    .action(async (dir: string, opts: { controlPort: number; rate: number; prometheus?: string }) => setCode(await (await import('./up.ts')).runUp(dir, opts, io)));

  // Kubernetes: install manifests, offline injection, and the classic sidecar's start hook.
  // The image scripts/build-image.sh makes (docs/kubernetes.md, "The image"): push it and pass --image.
  const image = `localhost/trellis:${pkg.version}`;
  sub('install')
    .description('print the Kubernetes objects that run Trellis (namespace, RBAC, reconciler, webhook with generated certificates): trellis install --repo URL | kubectl apply -f -')
    .option('--namespace <ns>', 'namespace of the control plane', 'trellis-system')
    .option('--repo <url>', 'git repository of the mesh spec the reconciler follows (required unless --only)')
    .option('--branch <name>', 'branch to follow', 'main')
    .option('--path <dir>', 'spec folder inside the repo (default: its root)')
    .option('--image <image>', 'trellis image for the reconciler and the sidecars', image)
    .option('--only <part>', 'print only the objects holding generated keys: webhook (its serving Secret and the webhook configuration, to rotate its certificate); the mesh root is made by the reconciler in the cluster')
    .action(async (flags: import('./install.ts').InstallFlags) => setCode(await (await import('./install.ts')).runInstall(flags, io)));
  sub('uninstall')
    .description('print the objects trellis install created, for: trellis uninstall | kubectl delete --ignore-not-found -f -')
    .option('--namespace <ns>', 'namespace of the control plane', 'trellis-system')
    .action(async (flags: { namespace: string }) => setCode(await (await import('./install.ts')).runUninstall(flags, io)));
  sub('inject')
    .description('add the Trellis sidecar to the pods of Kubernetes manifests (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod, List): trellis inject app.yaml | kubectl apply -f -')
    .argument('<file>', 'YAML file, or - for stdin')
    .option('--namespace <ns>', 'namespace of objects that name none (where kubectl will put them)', 'default')
    .option('--image <image>', 'trellis image of the sidecar', image)
    .option('--control-namespace <ns>', 'namespace of the reconciler (trellis install --namespace)', 'trellis-system')
    .option('--control-url <url>', 'reconciler address for the sidecars (default: http://trellis.<control-namespace>.svc:15010)')
    .option('--no-native-sidecars', 'for Kubernetes before 1.29: the sidecar as a regular first container held until ready by a postStart hook')
    .action(async (file: string, flags: import('./inject.ts').InjectFlags) => setCode(await (await import('./inject.ts')).runInject(file, flags, io)));
  sub('check')
    .description('check that Trellis is installed and working in a cluster (API server, RBAC, reconciler replicas, webhook and its certificate, mesh CA, sidecars), one line each; exit 1 when a check fails')
    .option('--kubeconfig <file>', 'cluster to check (default: KUBECONFIG, else in-cluster, else ~/.kube/config)')
    .option('--namespace <ns>', 'namespace of the control plane', 'trellis-system')
    .addOption(new Option('--format <format>', 'output format: text or json (both to stdout)').default('text').argParser(parseFormat))
    .option('--reconciler-url <url>', 'ask this reconciler for /status, repeatable (default: each replica through the API server\'s pod proxy)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--webhook-url <url>', 'also call the injection webhook at this https address, trusting only its caBundle')
    .action(async (flags: import('./check.ts').CheckFlags) => setCode(await (await import('./check.ts')).runCheck(flags, io)));
  sub('wait-ready')
    .description("wait until a sidecar's admin /readyz answers 200 (the postStart hook of a classic injected sidecar); exit 1 on timeout")
    .addOption(opt('--admin <[host:]port>', "the sidecar's admin listener", parseListen, { host: '127.0.0.1', port: 15000 }, '127.0.0.1:15000'))
    .addOption(opt('--timeout <duration>', 'how long to wait', parseDurationFlag, 120_000, '120s'))
    .action(async (flags: { admin: import('./flags.ts').ListenAddress; timeout: number }) => setCode(await (await import('./inject.ts')).runWaitReady(flags, io)));

  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(io, (c) => (code = c));
  if (argv.length === 0) {
    program.outputHelp();
    return EXIT.usage;
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    io.stderr.write(`trellis: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}
