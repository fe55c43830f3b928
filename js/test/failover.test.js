// Failover (issue 14 item 5) against the real server binary: a client given several server
// URLs connects to the first that answers, and when its server goes away moves to the next
// one and resumes every channel with its last seen id and epoch, nothing missing and
// nothing twice when that server has the channel's log (the same data directory), and
// `recovered: false` when it has a log of its own (another data directory, another epoch).
import test from 'node:test';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RingbearerClient } from '../ringbearer.js';
import { TestServer, freeAddr, waitFor } from './server.js';

const fast = { initialMs: 20, maxMs: 200 };

function client(opts) {
  const c = new RingbearerClient({ WebSocket, backoff: fast, ...opts });
  const seen = [];
  const states = [];
  c.on('message', (m) => seen.push(m));
  c.on('state', (s) => states.push(s));
  return { c, seen, states };
}

test('a client given [a dead address, a live server] connects to the live one', { timeout: 30000 }, async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const dead = `ws://${await freeAddr()}/ws`;
  const a = client({ urls: [dead, server.wsUrl], token: server.token('u-a', 'org-1', 'coordinator', ['w-1']) });
  t.after(() => a.c.close());
  await a.c.connect();
  assert.equal(a.c.url, server.wsUrl);
  const failed = a.states.find((s) => s.state === 'reconnecting');
  assert.equal(failed.url, dead, 'the failure names the dead server');
  assert.equal(failed.nextUrl, server.wsUrl);
  assert.equal(failed.delayMs, 0, 'the rest of the first round goes at once');
  assert.equal(a.states.at(-1).url, server.wsUrl);
  await a.c.ping();
});

test('server A killed: the client moves to server B (same data) and resumes every message once, in order', { timeout: 30000 }, async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const a = server.wsUrl;
  const bAddr = await freeAddr();
  const b = `ws://${bAddr}/ws`;
  // While `away`, the reader's token is refused: what is published meanwhile must come
  // back in the resubscribe on B, not live.
  let away = false;
  const readerToken = server.token('u-r', 'org-1', 'couple', ['w-1']);
  const reader = client({ urls: [a, b], getToken: () => (away ? 'not-a-token' : readerToken) });
  const writerToken = server.token('u-w', 'org-1', 'coordinator', ['w-1']);
  let writer = client({ url: a, token: writerToken });
  t.after(() => { reader.c.close(); writer.c.close(); });
  const resubscribed = [];
  reader.c.on('resubscribed', (e) => resubscribed.push(e));
  await Promise.all([reader.c.connect(), writer.c.connect()]);
  assert.equal(reader.c.url, a);
  await writer.c.create({ name: ch, type: 'shared', wedding_id: 'w-1' });
  await reader.c.subscribe(ch);
  for (let n = 1; n <= 3; n++) await writer.c.publish({ channel: ch, type: 'general', payload: { n } });
  await waitFor(() => reader.seen.length === 3, 'three on A');

  away = true;
  writer.c.close();
  await server.killAndRestartAt(bAddr);
  assert.equal(server.wsUrl, b);
  writer = client({ url: b, token: writerToken });
  await writer.c.connect();
  for (let n = 4; n <= 6; n++) await writer.c.publish({ channel: ch, type: 'general', payload: { n } });
  await waitFor(() => reader.states.some((s) => s.state === 'reconnecting' && s.url === b), 'a failed attempt on B, named');
  assert.equal(reader.seen.length, 3, 'nothing while away');
  away = false;

  await waitFor(() => reader.seen.length >= 6, 'six at the reader');
  assert.equal(reader.c.url, b);
  assert.equal(reader.states.filter((s) => s.state === 'open').at(-1).url, b);
  assert.deepEqual(resubscribed, [{ channel: ch, recovered: true }]);
  await writer.c.publish({ channel: ch, type: 'general', payload: { n: 7 } });
  await waitFor(() => reader.seen.length >= 7, 'seven at the reader');
  await reader.c.ping();
  assert.deepEqual(reader.seen.map((m) => m.payload.n), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(reader.seen.map((m) => m.id), [1, 2, 3, 4, 5, 6, 7]);
});

test('moving to a server with a log of its own (another data directory) is reported as not recovered', { timeout: 30000 }, async (t) => {
  const a = await TestServer.start();
  t.after(() => a.stop());
  // Server B: its own data directory, the same signing secret (so the same tokens work).
  const bDir = mkdtempSync(join(tmpdir(), 'rb-js-b-'));
  writeFileSync(join(bDir, 'test.toml'), '');
  writeFileSync(join(bDir, 'dev-secret'), a.secret());
  const b = new TestServer(bDir);
  t.after(() => b.stop());
  await b._spawn('127.0.0.1:0');
  const ch = 'wedding:main:w-1';
  const coordToken = a.token('u-w', 'org-1', 'coordinator', ['w-1']);
  const wa = client({ url: a.wsUrl, token: coordToken });
  const wb = client({ url: b.wsUrl, token: coordToken });
  const reader = client({ urls: [a.wsUrl, b.wsUrl], token: a.token('u-r', 'org-1', 'couple', ['w-1']) });
  t.after(() => { wa.c.close(); wb.c.close(); reader.c.close(); });
  await Promise.all([wa.c.connect(), wb.c.connect(), reader.c.connect()]);
  await wa.c.create({ name: ch, type: 'shared', wedding_id: 'w-1' });
  await wb.c.create({ name: ch, type: 'shared', wedding_id: 'w-1' });
  await wb.c.publish({ channel: ch, type: 'general', payload: { on: 'b' } });
  const resubscribed = [];
  reader.c.on('resubscribed', (e) => resubscribed.push(e));
  const sub = await reader.c.subscribe(ch);
  for (let n = 1; n <= 2; n++) await wa.c.publish({ channel: ch, type: 'general', payload: { n } });
  await waitFor(() => reader.seen.length === 2, 'two on A');

  wa.c.close();
  await a.kill();
  await waitFor(() => resubscribed.length === 1, 'resubscribed on B');
  assert.equal(reader.c.url, b.wsUrl);
  assert.deepEqual(resubscribed, [{ channel: ch, recovered: false }], `B's epoch is not A's (${sub.epoch})`);
  // B's own history comes whole: de-duplication started over with B's epoch.
  await waitFor(() => reader.seen.length === 3, 'B\'s message');
  assert.deepEqual(reader.seen.map((m) => [m.id, m.payload]), [[1, { n: 1 }], [2, { n: 2 }], [1, { on: 'b' }]]);
});
