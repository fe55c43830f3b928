// The client against the real server binary (Node, `ws` as the WebSocket): replies matched
// by ref, typed errors, presence and typing, de-duplication, resume after a server kill
// and restart, the offline outbox with idempotency keys, and token refresh on
// token_expiring.
import test from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RingbearerClient, RingbearerError } from '../ringbearer.js';
import { TestServer, waitFor } from './server.js';

const fast = { initialMs: 50, maxMs: 500 };

function client(server, opts) {
  const c = new RingbearerClient({ url: server.wsUrl, WebSocket, backoff: fast, ...opts });
  const seen = [];
  const states = [];
  c.on('message', (m) => seen.push(m));
  c.on('state', (s) => states.push(s));
  return { c, seen, states };
}

test('create, subscribe, publish, presence, typing, errors', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const a = client(server, { token: server.token('u-a', 'org-1', 'coordinator', ['w-1']) });
  const b = client(server, { getToken: async () => server.token('u-b', 'org-1', 'photographer', ['w-1']) });
  t.after(() => { a.c.close(); b.c.close(); });
  await Promise.all([a.c.connect(), b.c.connect()]);
  assert.equal(a.c.state, 'open');
  const created = await a.c.create({ name: ch, type: 'shared', wedding_id: 'w-1' });
  assert.equal(created.channelName, ch);
  assert.match(created.channelId, /^ch_/);
  const subA = await a.c.subscribe(ch);
  assert.equal(subA.recovered, true);
  await b.c.subscribe(ch);
  await waitFor(() => a.c.members(ch).length === 2, 'two members at a');
  await b.c.setPresence(ch, { activity: 'ceremony', location: 'ceremony_area' });
  await waitFor(() => a.c.members(ch).some((m) => m.user_id === 'u-b' && m.meta.activity === 'ceremony'), 'b\'s meta at a');

  const typing = [];
  a.c.on('typing', (e) => typing.push(e));
  b.c.typing(ch);
  await waitFor(() => typing.length === 1, 'typing');
  assert.deepEqual(typing[0], { channel: ch, userId: 'u-b', role: 'photographer' });

  const results = await Promise.all([1, 2, 3].map((n) => b.c.publish({ channel: ch, type: 'general', payload: { n } })));
  assert.deepEqual(results.map((r) => r.id), [1, 2, 3]);
  assert.equal(results[0].deliveredCount, 2);
  await waitFor(() => a.seen.length === 3 && b.seen.length === 3, 'three messages at both');
  assert.deepEqual(a.seen.map((m) => m.payload.n), [1, 2, 3]);

  // The same idempotency key twice is one message.
  const k1 = await b.c.publish({ channel: ch, type: 'general', payload: { n: 4 }, idempotencyKey: 'k-4' });
  const k2 = await b.c.publish({ channel: ch, type: 'general', payload: { n: 4 }, idempotencyKey: 'k-4' });
  assert.equal(k1.id, k2.id);
  assert.equal(k2.deliveredCount, 0);

  // Typed errors with the SPEC code.
  await assert.rejects(a.c.create({ name: 'wedding:*:w-1' }), (e) => e instanceof RingbearerError && e.code === 'WS_INVALID_CHANNEL' && e.retryable === false);
  await assert.rejects(a.c.subscribe('wedding:main:nope'), (e) => e.code === 'WS_CHANNEL_NOT_FOUND');
  await assert.rejects(a.c.create({ name: 'wedding:main:w-2', wedding_id: 'w-2' }), (e) => e.code === 'WS_WEDDING_ISOLATION_VIOLATION');
  // A re-subscribe of the same channel hands nothing twice.
  await a.c.subscribe(ch, { lastSeenId: 0 });
  assert.deepEqual(a.seen.map((m) => m.id), [1, 2, 3, 4]);
});

test('WS_RATE_LIMITED carries retryAfter', async (t) => {
  const server = await TestServer.start('[limits]\nchannel_messages_per_min = 2\n');
  t.after(() => server.stop());
  const a = client(server, { token: server.token('u-a', 'org-1', 'coordinator', ['w-1']) });
  t.after(() => a.c.close());
  await a.c.connect();
  const ch = 'wedding:main:w-1';
  await a.c.create({ name: ch, wedding_id: 'w-1' });
  await a.c.publish({ channel: ch, type: 'general', payload: 1 });
  await a.c.publish({ channel: ch, type: 'general', payload: 2 });
  await assert.rejects(a.c.publish({ channel: ch, type: 'general', payload: 3 }), (e) => {
    assert.equal(e.code, 'WS_RATE_LIMITED');
    assert.ok(e.retryAfter > 0, `retryAfter ${e.retryAfter}`);
    return true;
  });
});

test('server killed and restarted: outbox sent with keys, subscribers resume every message once, in order', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const reader = client(server, { getToken: async () => server.token('u-r', 'org-1', 'couple', ['w-1']) });
  const writer = client(server, { getToken: async () => server.token('u-w', 'org-1', 'coordinator', ['w-1']) });
  t.after(() => { reader.c.close(); writer.c.close(); });
  const resubscribed = [];
  reader.c.on('resubscribed', (e) => resubscribed.push(e));
  await Promise.all([reader.c.connect(), writer.c.connect()]);
  await writer.c.create({ name: ch, type: 'shared', wedding_id: 'w-1' });
  await reader.c.subscribe(ch);
  for (let n = 1; n <= 3; n++) await writer.c.publish({ channel: ch, type: 'general', payload: { n } });
  await waitFor(() => reader.seen.length === 3, 'three before the kill');

  await server.kill();
  await waitFor(() => writer.c.state === 'reconnecting' && reader.c.state === 'reconnecting', 'both reconnecting');
  const later = [4, 5, 6, 7].map((n) => writer.c.publish({ channel: ch, type: 'general', payload: { n } }));
  assert.equal(writer.c.outboxSize, 4);
  await server.killAndRestart();
  const ids = (await Promise.all(later)).map((r) => r.id);
  assert.deepEqual(ids, [4, 5, 6, 7]);
  await waitFor(() => reader.seen.length >= 7, 'seven at the reader');
  assert.deepEqual(reader.seen.map((m) => m.payload.n), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(resubscribed, [{ channel: ch, recovered: true }]);
  // Nothing arrives twice even after another round trip.
  await reader.c.ping();
  assert.equal(reader.seen.length, 7);
  assert.ok(reader.states.some((s) => s.state === 'reconnecting'));
});

test('a publish in flight when the connection dropped is resent with its key and stored once', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const w = client(server, { getToken: async () => server.token('u-w', 'org-1', 'coordinator', ['w-1']) });
  const obs = client(server, { getToken: async () => server.token('u-o', 'org-1', 'couple', ['w-1']) });
  t.after(() => { w.c.close(); obs.c.close(); });
  await Promise.all([w.c.connect(), obs.c.connect()]);
  await w.c.create({ name: ch, wedding_id: 'w-1' });
  await obs.c.subscribe(ch);
  // The writer stops reading its socket: the server stores the publish and answers, but
  // the answer is never read; then the connection is lost.
  const sent = w.c._ws;
  sent.pause();
  const p = w.c.publish({ channel: ch, type: 'general', payload: 'once' });
  await waitFor(() => obs.seen.length === 1, 'the message stored and delivered');
  assert.equal(w.c.outboxSize, 0);
  sent.terminate();
  sent.resume();
  const r = await p;
  assert.equal(r.id, 1, 'the resend answered the first copy');
  const again = await w.c.publish({ channel: ch, type: 'general', payload: 'second' });
  assert.equal(again.id, 2, 'the resend did not store a second copy');
  await waitFor(() => obs.seen.length === 2, 'second');
  assert.deepEqual(obs.seen.map((m) => m.payload), ['once', 'second']);
});

test('token_expiring: the token callback refreshes the token on the open connection; without it the server closes 4002', async (t) => {
  const server = await TestServer.start('[io]\ntoken_expiry_warning_secs = 60\ntoken_leeway_secs = 0\n');
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const ttl = 3;
  let asked = 0;
  const fresh = client(server, {
    getToken: async () => server.token('u-f', 'org-1', 'coordinator', ['w-1'], asked++ === 0 ? ttl : 3600),
  });
  const stale = client(server, { token: server.token('u-s', 'org-1', 'coordinator', ['w-1'], ttl) });
  t.after(() => { fresh.c.close(); stale.c.close(); });
  const expiring = [];
  fresh.c.on('token_expiring', (e) => expiring.push(e));
  await Promise.all([fresh.c.connect(), stale.c.connect()]);
  await fresh.c.create({ name: ch, wedding_id: 'w-1' });
  await fresh.c.subscribe(ch);
  const t0 = Date.now();
  await waitFor(() => expiring.length === 1 && asked === 2, 'token_expiring and a refresh');
  // The stale client is closed 4002 at exp; the refreshed one stays on its connection.
  await waitFor(() => stale.states.some((s) => s.state === 'reconnecting' && s.code === 4002), 'stale closed with 4002', 15000);
  assert.ok(Date.now() - t0 < 15000);
  await fresh.c.publish({ channel: ch, type: 'general', payload: 'after expiry' });
  await waitFor(() => fresh.seen.length === 1, 'message after expiry');
  assert.equal(fresh.states.filter((s) => s.state === 'open').length, 1, 'never reconnected');
});

test('the outbox is bounded; close() fails what waits with CLIENT_CLOSED', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const w = client(server, { getToken: async () => server.token('u-w', 'org-1', 'coordinator', ['w-1']), outboxMax: 2 });
  await w.c.connect();
  await w.c.create({ name: ch, wedding_id: 'w-1' });
  await server.kill();
  await waitFor(() => w.c.state === 'reconnecting', 'reconnecting');
  const first = w.c.publish({ channel: ch, type: 'general', payload: 1 });
  const second = w.c.publish({ channel: ch, type: 'general', payload: 2 });
  await assert.rejects(w.c.publish({ channel: ch, type: 'general', payload: 3 }), (e) => e.code === 'CLIENT_OUTBOX_FULL' && e.retryable);
  assert.equal(w.c.outboxSize, 2);
  // Reconnect attempts back off: delays stay within the configured bound.
  await waitFor(() => w.states.filter((s) => s.state === 'reconnecting').length >= 3, 'three attempts');
  for (const s of w.states.filter((x) => x.state === 'reconnecting')) assert.ok(s.delayMs >= 0 && s.delayMs <= 500, `delay ${s.delayMs}`);
  w.c.close();
  await assert.rejects(first, (e) => e.code === 'CLIENT_CLOSED');
  await assert.rejects(second, (e) => e.code === 'CLIENT_CLOSED');
  assert.equal(w.states.at(-1).state, 'closed');
  await assert.rejects(w.c.publish({ channel: ch, type: 'general', payload: 4 }), (e) => e.code === 'CLIENT_CLOSED');
});

test('acks move the user\'s cursor: manual acks resume after the acked id, automatic acks after all', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:main:w-1';
  const tok = (u) => async () => server.token(u, 'org-1', 'couple', ['w-1']);
  const w = client(server, { getToken: async () => server.token('u-w', 'org-1', 'coordinator', ['w-1']) });
  const manual = client(server, { getToken: tok('u-manual'), autoAck: false });
  const auto = client(server, { getToken: tok('u-auto') });
  t.after(() => { w.c.close(); manual.c.close(); auto.c.close(); });
  await Promise.all([w.c.connect(), manual.c.connect(), auto.c.connect()]);
  await w.c.create({ name: ch, wedding_id: 'w-1' });
  await manual.c.subscribe(ch);
  await auto.c.subscribe(ch);
  for (let n = 1; n <= 3; n++) await w.c.publish({ channel: ch, type: 'general', payload: n });
  await waitFor(() => manual.seen.length === 3 && auto.seen.length === 3, 'three at both');
  manual.c.ack(ch, 2);
  // A request to the channel's owner after the ack, on the same connection: the ack is in.
  await manual.c.setPresence(ch, { activity: 'breakdown' });
  await auto.c.setPresence(ch, { activity: 'breakdown' });
  manual.c.close();
  auto.c.close();
  // The same users on new clients (a page reload): the server resumes from their cursors.
  const manual2 = client(server, { getToken: tok('u-manual') });
  const auto2 = client(server, { getToken: tok('u-auto') });
  t.after(() => { manual2.c.close(); auto2.c.close(); });
  await Promise.all([manual2.c.connect(), auto2.c.connect()]);
  const m = await manual2.c.subscribe(ch);
  const a = await auto2.c.subscribe(ch);
  assert.deepEqual(m.messages.map((x) => x.id), [3]);
  assert.deepEqual(manual2.seen.map((x) => x.id), [3]);
  assert.deepEqual(a.messages, []);
  assert.equal(a.recovered, true);
});

test('close() while the socket is still connecting raises nothing (Node ws throws unheard errors)', async (t) => {
  const server = await TestServer.start('');
  t.after(() => server.stop());
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  t.after(() => process.off('uncaughtException', onUncaught));
  for (let i = 0; i < 20; i++) {
    const { c } = client(server, { token: server.token('u-c', 'org-1', 'coordinator', ['w-1']) });
    c.connect().catch(() => {});
    // After the token is read and the socket made, before the server's answer.
    await new Promise((r) => setImmediate(r));
    c.close();
  }
  // Each aborted handshake reports within a few event-loop turns; a fresh connection
  // that completes proves they have all been processed on this loop.
  const { c } = client(server, { token: server.token('u-c', 'org-1', 'coordinator', ['w-1']) });
  await c.connect();
  c.close();
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(uncaught.map(String), []);
});

test('shared state: compare-and-set, precedence and the override event', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.stop());
  const ch = 'wedding:plan:w-1';
  const vendor = client(server, { token: server.token('u-1', 'org-1', 'photographer', ['w-1']) });
  const couple = client(server, { token: server.token('u-2', 'org-1', 'couple', ['w-1']) });
  const other = client(server, { token: server.token('u-1', 'org-2', 'photographer', ['w-2']) });
  t.after(() => { vendor.c.close(); couple.c.close(); other.c.close(); });
  await Promise.all([vendor.c.connect(), couple.c.connect(), other.c.connect()]);
  await couple.c.create({ name: ch, wedding_id: 'w-1' });
  await vendor.c.subscribe(ch);
  const told = [];
  vendor.c.on('state_overridden', (e) => told.push(e));

  assert.deepEqual(await vendor.c.stateGet(ch, 'shots'), { channel: ch, doc: 'shots', version: 0, value: null, writer: null });
  const w1 = await vendor.c.stateSet(ch, 'shots', 0, { list: ['rings'] });
  assert.deepEqual([w1.applied, w1.version, w1.overrode], [true, 1, null]);
  // A second create by the same rank: refused with the current document.
  const again = await vendor.c.statePatch(ch, 'shots', 0, { list: [] });
  assert.deepEqual(again, { applied: false, version: 1, value: { list: ['rings'] }, writer: { user_id: 'u-1', org: 'org-1', role: 'photographer' }, yourVersion: 0 });
  // The couple's stale patch outranks the vendor's version; the vendor hears of it.
  const w2 = await couple.c.statePatch(ch, 'shots', 0, { list: ['rings', 'cake'] });
  assert.equal(w2.applied, true);
  assert.equal(w2.overrode.user_id, 'u-1');
  await waitFor(() => told.length === 1, 'state_overridden at the vendor');
  assert.deepEqual(told[0], { channel: ch, doc: 'shots', version: 2, yourVersion: 1, by: { user_id: 'u-2', org: 'org-1', role: 'couple' } });
  // The change is a message too.
  await waitFor(() => vendor.seen.filter((m) => m.type === 'state').length === 2, 'two state messages');
  // Another organization's u-1 reaches nothing; bad input is WS_BAD_REQUEST.
  await assert.rejects(other.c.stateGet(ch, 'shots'), (e) => e.code === 'WS_WEDDING_ISOLATION_VIOLATION');
  await assert.rejects(couple.c.stateSet(ch, 'Shots', 2, {}), (e) => e.code === 'WS_BAD_REQUEST');
  await assert.rejects(couple.c.stateSet(ch, 'shots', 2, [1]), (e) => e.code === 'WS_BAD_REQUEST');
  assert.deepEqual((await couple.c.stateGet(ch, 'shots')).value, { list: ['rings', 'cake'] });
});
