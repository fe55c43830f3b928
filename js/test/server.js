// Test support: a real `ringbearer serve` (2 shards, loopback, a temporary data directory),
// tokens signed HS256 with its development secret, and waiting on conditions with bounded
// timeouts. The binary comes from RINGBEARER_BIN (default ../target/debug/ringbearer).
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.RINGBEARER_BIN
  ? resolve(process.env.RINGBEARER_BIN)
  : resolve(here, '..', '..', 'target', 'debug', 'ringbearer');

/** How long any single wait may take before the test fails. */
export const WAIT_MS = 10000;

export class TestServer {
  /** Starts a server with `config` (TOML) written to DATA/test.toml. */
  static async start(config = '') {
    const data = mkdtempSync(join(tmpdir(), 'rb-js-'));
    writeFileSync(join(data, 'test.toml'), config);
    const s = new TestServer(data);
    await s._spawn('127.0.0.1:0');
    return s;
  }

  constructor(data) {
    this.data = data;
    this.child = null;
    this.addr = null;
  }

  async _spawn(listen) {
    const child = spawn(
      BIN,
      ['serve', '--listen', listen, '--shards', '2', '--data', this.data, '--config', join(this.data, 'test.toml')],
      { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } },
    );
    this.child = child;
    const exited = new Promise((_, reject) =>
      child.once('exit', (code, sig) => reject(new Error(`ringbearer exited (${code ?? sig}) before listening`))),
    );
    const rl = createInterface({ input: child.stdout });
    const first = new Promise((res) => rl.once('line', res));
    const line = await withTimeout(Promise.race([first, exited]), WAIT_MS, 'server start');
    rl.on('line', () => {}); // keep draining stdout
    const m = /listening on (\S+)/.exec(line);
    if (!m) throw new Error(`unexpected first line: ${line}`);
    this.addr = m[1];
  }

  get port() {
    return Number(this.addr.split(':').pop());
  }

  get wsUrl() {
    return `ws://${this.addr}/ws`;
  }

  get httpUrl() {
    return `http://${this.addr}`;
  }

  secret() {
    return readFileSync(join(this.data, 'dev-secret'), 'utf8').trim();
  }

  /** A token for `sub` in `org`, valid for `ttlS` seconds (default an hour). */
  token(sub, org, role, weddings, ttlS = 3600, extra = {}) {
    const now = Math.floor(Date.now() / 1000);
    return this.sign({ sub, org, role, tier: 'professional', weddings, exp: now + ttlS, nbf: now - 1, ...extra });
  }

  sign(claims) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    const sig = createHmac('sha256', this.secret()).update(body).digest('base64url');
    return `${body}.${sig}`;
  }

  /** SIGKILL (nothing flushed), then start again on the same port and data directory. */
  async killAndRestart(between = async () => {}) {
    await this.kill();
    // The killed process's listening sockets can outlive it for a moment (io_uring releases
    // its files after the exit): the new one would refuse the port as taken.
    await waitFor(() => !listening(this.port), `port ${this.port} released`);
    await between();
    await this._spawn(this.addr);
  }

  /**
   * SIGKILL, then start again on the same data directory listening on `listen` (e.g. an
   * address from freeAddr()): a second server with the first one's channel logs, at an
   * address a client was given in advance.
   */
  async killAndRestartAt(listen) {
    await this.kill();
    await this._spawn(listen);
  }

  async kill() {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((res) => c.once('exit', res));
    c.kill('SIGKILL');
    await withTimeout(gone, WAIT_MS, 'server exit');
  }

  async stop() {
    await this.kill();
    rmSync(this.data, { recursive: true, force: true });
  }

  /** A REST call; resolves with {status, body}. */
  async rest(method, path, { token, apiKey, body } = {}) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (apiKey) headers['x-api-key'] = apiKey;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(this.httpUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: r.status, headers: r.headers, text, body: json };
  }
}

/** A loopback address (`127.0.0.1:port`) nothing listens on right now (bound, then released). */
export async function freeAddr() {
  const srv = createServer();
  await new Promise((res) => srv.listen(0, '127.0.0.1', res));
  const { port } = srv.address();
  await new Promise((res) => srv.close(res));
  return `127.0.0.1:${port}`;
}

/** Whether some socket listens on TCP `port` (from /proc/net/tcp and tcp6). */
function listening(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3 && f[3] === '0A' && f[1].endsWith(`:${hex}`)) return true;
    }
  }
  return false;
}

export function withTimeout(p, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Resolves once `cond()` is truthy, checking every 20 ms; fails after `ms`. */
export async function waitFor(cond, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
