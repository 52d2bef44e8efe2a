/** `trellis install` and `trellis uninstall`: the cluster objects of Trellis, printed as YAML for `kubectl apply -f -` / `kubectl delete -f -`. */
import { readFileSync } from 'node:fs';
import { SERVICE_NAME, WEBHOOK_SECRET, installObjects, renderObjects, uninstallObjects, type InstallPart, type InstallSecrets } from '../kubernetes/install.ts';
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
  if (part === ('ca' as InstallPart)) {
    // Gone on purpose: a root printed here ends up in repositories. The reconciler makes it.
    io.stderr.write('trellis install: --only ca is gone: the reconciler creates the mesh root Secret trellis-ca on first start. To bring your own root, create it before the reconciler starts: kubectl -n NAMESPACE create secret tls trellis-ca --cert=ca.crt --key=ca.key\n');
    return EXIT.usage;
  }
  if (!['all', 'webhook'].includes(part)) {
    io.stderr.write(`trellis install: --only takes webhook (its serving Secret and the webhook configuration, to rotate its certificate), not "${flags.only}"\n`);
    return EXIT.usage;
  }
  if (part === 'all' && !flags.repo) {
    io.stderr.write('trellis install: --repo URL is required: the git repository of the mesh spec the reconciler follows\n');
    return EXIT.usage;
  }
  const tls = await issueServingCertificate({ dnsNames: serviceDnsNames(SERVICE_NAME, flags.namespace) });
  const secrets: InstallSecrets = { webhook: { caPem: tls.caPem, certificatePem: tls.certificatePem, privateKeyPem: tls.privateKeyPem } };
  const objects = installObjects(
    { namespace: flags.namespace, repo: flags.repo ?? '', branch: flags.branch, ...(flags.path ? { path: flags.path } : {}), image: flags.image },
    secrets,
    part,
  );
  const what = part === 'all' ? 'Trellis' : 'the Trellis injection webhook';
  io.stdout.write(
    renderObjects(
      objects,
      `# ${what}, by trellis install ${pkg.version}: apply with kubectl apply -f -\n` +
        `# Holds the injection webhook's generated serving key (Secret ${WEBHOOK_SECRET}): do not commit this output unencrypted.\n` +
        '# The mesh root is not here: the reconciler creates it in the cluster on first start.\n',
    ),
  );
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
