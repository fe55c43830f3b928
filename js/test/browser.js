// Browser test support: Debian's chromium driven by playwright-core, and a tiny static
// server for the test pages (they load the client from the Ringbearer server itself).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const OUT = join(here, '..', 'test-output');

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A file of an installed `@supabase/` package for the realtime-js page, resolved as a
 * bundler would (`./lib/x` is `./lib/x.js`); `null` outside node_modules/@supabase/.
 */
function packageFile(path) {
  const m = /^\/node_modules\/(@supabase\/[A-Za-z0-9_./-]+)$/.exec(path);
  if (!m || m[1].includes('..')) return null;
  for (const candidate of [m[1], `${m[1]}.js`]) {
    try {
      return readFileSync(join(here, '..', 'node_modules', candidate));
    } catch {
      // next candidate
    }
  }
  return null;
}

/** Serves test/pages/ (and node_modules/@supabase/) on 127.0.0.1:0; resolves with {url, close}. */
export async function pageServer() {
  const srv = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const pkg = packageFile(path);
    if (pkg) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(pkg);
      return;
    }
    const name = path.replace(/^\/+/, '');
    if (!/^[a-z0-9_-]+\.html$/.test(name)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = readFileSync(join(here, 'pages', name));
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => srv.close(r)) };
}
