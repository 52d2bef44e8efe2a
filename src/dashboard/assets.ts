/**
 * The page's files, served by the reconciler (`/dashboard`) and by `trellis dashboard`:
 * index.html, style.css and the bundled app.js (with app.css, the libraries' styles). Read once; the page loads nothing else,
 * and its Content-Security-Policy lets it load nothing else.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { BUNDLE, BUNDLE_CSS, PAGE_DIR, buildDashboard } from './build.ts';

const TYPES: Record<string, string> = { 'index.html': 'text/html; charset=utf-8', 'style.css': 'text/css; charset=utf-8', 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' };

/**
 * Scripts from this origin only, data fetched from it too, nothing may frame the page. Inline
 * styles are allowed: cytoscape sets its canvas layers' style attributes (a style cannot run
 * code; the page puts no request or spec text into one).
 */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** The bundle's script and its stylesheet (the libraries' CSS), built on first use when missing. */
let bundle: Promise<{ 'app.js': Buffer; 'app.css': Buffer }> | undefined;

async function read(name: string): Promise<Buffer> {
  if (name !== 'app.js' && name !== 'app.css') return readFileSync(join(PAGE_DIR, name));
  bundle ??= (async () => {
    if (!existsSync(BUNDLE) || !existsSync(BUNDLE_CSS)) await buildDashboard();
    return { 'app.js': readFileSync(BUNDLE), 'app.css': readFileSync(BUNDLE_CSS) };
  })();
  return bundle.then(
    (b) => b[name],
    (err: unknown) => {
      bundle = undefined;
      throw err;
    },
  );
}

/** Answers `GET /dashboard[/<file>]`; false for paths that are not the page's. */
export function serveAsset(path: string, res: ServerResponse): boolean {
  const name = path === '/dashboard' || path === '/dashboard/' ? 'index.html' : path.startsWith('/dashboard/') ? path.slice('/dashboard/'.length) : undefined;
  if (name === undefined) return false;
  const type = TYPES[name];
  if (!type) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    return true;
  }
  read(name).then(
    (body) => {
      res.writeHead(200, { 'content-type': type, 'content-length': body.length, 'cache-control': 'no-cache', 'content-security-policy': CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' });
      res.end(body);
    },
    (err: Error) => {
      res.writeHead(503, { 'content-type': 'text/plain' }).end(`the dashboard's script is not built (npm run build:dashboard): ${err.message}`);
    },
  );
  return true;
}
