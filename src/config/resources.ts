/**
 * Building proxy configs from resources: versions are content hashes, and a config's
 * version hashes its resources' names and versions, so two configs with the same
 * resources have the same version whatever built them.
 */
import { contentHash, sha256 } from './canonical.ts';
import { PROXY_CONFIG_API_VERSION, type ProxyConfig, type Resource, type ResourceBody } from './types.ts';

export function makeResource<B extends ResourceBody>(name: string, body: B): Resource<B> {
  return { body, name, version: contentHash(body) };
}

/** Version over a set of named versions (order-independent: sorted by name first). */
export function versionOf(entries: Iterable<{ readonly name: string; readonly version: string }>): string {
  const lines = [...entries].map((e) => `${e.name}\u0000${e.version}\n`);
  // Entries given in name order (a config's resources are) are in line order already.
  for (let i = 1; i < lines.length; i++)
    if (lines[i - 1]! > lines[i]!) {
      lines.sort();
      break;
    }
  return sha256(lines.join(''));
}

export function makeProxyConfig(service: string, resources: Iterable<Resource>): ProxyConfig {
  const sorted = [...resources].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { apiVersion: PROXY_CONFIG_API_VERSION, kind: 'ProxyConfig', resources: sorted, service, version: versionOf(sorted) };
}
