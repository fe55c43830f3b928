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

/** Serves test/pages/ on 127.0.0.1:0; resolves with {url, close}. */
export async function pageServer() {
  const srv = createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '');
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
