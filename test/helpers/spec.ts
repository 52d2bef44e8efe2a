/** Building small specs in tests without files on disk. */
import { compileFiles, type CompileResult } from '../../src/compiler/compile.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';

/** Compiles in-memory files given as `{ path: yamlText }`. */
export function compileTexts(files: Record<string, string>): CompileResult {
  return compileFiles(Object.entries(files).map(([path, text]) => new SourceFile(path, text)));
}

/** Codes of a result's diagnostics, in order. */
export function codes(result: CompileResult): string[] {
  return result.diagnostics.map((d) => d.code);
}

/** HTTPRoute `api` attached to Service `api`, with `rules` (the list's items, indented four spaces, ending in a newline). */
export function apiRoute(rules: string): string {
  return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
${rules}`;
}

/** A mesh with two meshed services `web` (caller) and `api`, and a route hook; tests add documents. */
export const BASE_SPEC = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  trustDomain: test.local
  access: { default: allow }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web }
spec:
  ports: [{ name: http, port: 80, targetPort: 8080 }]
  endpoints: { static: [{ address: 127.0.0.1, port: 16001 }] }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ name: http, port: 80, targetPort: 8081 }]
  endpoints: { static: [{ address: 127.0.0.1, port: 16002 }] }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api-v2 }
spec:
  ports: [{ name: http, port: 80, targetPort: 8082 }]
  endpoints: { static: [{ address: 127.0.0.1, port: 16003 }] }
`;

/**
 * Mesh `test` in trust domain test.local and the meshed caller `client` (its own endpoint is
 * a placeholder), then `documents` (each ending in a newline, without `---`). `mesh` holds
 * the Mesh spec's lines after trustDomain (indented two spaces).
 */
export function clientSpec(mesh = '  access: { default: allow }', ...documents: string[]): string {
  const meshDoc = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  trustDomain: test.local
${mesh}
`;
  const client = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`;
  return [meshDoc, client, ...documents].join('---\n');
}

/**
 * Two meshed services in trust domain test.local: `client` (the caller; its own endpoint
 * is a placeholder) and `api`, whose one instance listens on `apiPort` (a sidecar's
 * inbound port). `mesh` holds the Mesh spec's lines after trustDomain (indented two
 * spaces); `extra` more documents.
 */
export function clientApiSpec(apiPort: number, mesh = '  access: { default: allow }', extra = ''): string {
  const api = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec: { ports: [{ port: 80, targetPort: 8080 }], endpoints: { static: [{ address: 127.0.0.1, port: ${apiPort} }] } }
`;
  return clientSpec(mesh, api, ...(extra ? [extra] : []));
}
