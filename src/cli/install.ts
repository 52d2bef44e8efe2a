/** `trellis install` and `trellis uninstall`: the cluster objects of Trellis, printed as YAML for `kubectl apply -f -` / `kubectl delete -f -`. */
import { readFileSync } from 'node:fs';
import { MeshCertificateAuthority } from '../identity/ca.ts';
import { SERVICE_NAME, installObjects, renderObjects, uninstallObjects, type InstallPart, type InstallSecrets } from '../kubernetes/install.ts';
import { issueServingCertificate, serviceDnsNames } from '../kubernetes/serving-certificate.ts';
import { EXIT, type CliIo } from './io.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export interface InstallFlags {
  namespace: string;
  repo?: string;
  branch: string;
  path?: string;
  image: string;
  only?: string;
}

export async function runInstall(flags: InstallFlags, io: CliIo): Promise<number> {
  if (!DNS_LABEL.test(flags.namespace)) {
    io.stderr.write(`trellis install: --namespace "${flags.namespace}" is not a namespace name (a lower-case DNS label)\n`);
    return EXIT.usage;
  }
  const part = (flags.only ?? 'all') as InstallPart;
  if (!['all', 'ca', 'webhook'].includes(part)) {
    io.stderr.write(`trellis install: --only takes ca (the mesh root Secret) or webhook (its serving Secret and the webhook configuration), not "${flags.only}"\n`);
    return EXIT.usage;
  }
  if (part === 'all' && !flags.repo) {
    io.stderr.write('trellis install: --repo URL is required: the git repository of the mesh spec the reconciler follows\n');
    return EXIT.usage;
  }
  const secrets: { meshCa?: InstallSecrets['meshCa']; webhook?: InstallSecrets['webhook'] } = {};
  if (part !== 'webhook') {
    const ca = await MeshCertificateAuthority.generate('trellis');
    secrets.meshCa = { certificatePem: ca.rootPem, privateKeyPem: await ca.exportPrivateKeyPem() };
  }
  if (part !== 'ca') {
    const tls = await issueServingCertificate({ dnsNames: serviceDnsNames(SERVICE_NAME, flags.namespace) });
    secrets.webhook = { caPem: tls.caPem, certificatePem: tls.certificatePem, privateKeyPem: tls.privateKeyPem };
  }
  const objects = installObjects(
    { namespace: flags.namespace, repo: flags.repo ?? '', branch: flags.branch, ...(flags.path ? { path: flags.path } : {}), image: flags.image },
    secrets,
    part,
  );
  const what = part === 'all' ? 'Trellis' : part === 'ca' ? 'the Trellis mesh root' : 'the Trellis injection webhook';
  io.stdout.write(renderObjects(objects, `# ${what}, by trellis install ${pkg.version}: apply with kubectl apply -f -\n# Holds generated private keys: do not commit this output unencrypted.\n`));
  return EXIT.ok;
}

export async function runUninstall(flags: { namespace: string }, io: CliIo): Promise<number> {
  if (!DNS_LABEL.test(flags.namespace)) {
    io.stderr.write(`trellis uninstall: --namespace "${flags.namespace}" is not a namespace name (a lower-case DNS label)\n`);
    return EXIT.usage;
  }
  const objects = uninstallObjects(flags.namespace).map((object) => ({ object }));
  io.stdout.write(renderObjects(objects, `# What trellis install created, webhook first, namespace last: kubectl delete --ignore-not-found -f -\n# Injected pods keep their sidecars until they are restarted.\n`));
  return EXIT.ok;
}
