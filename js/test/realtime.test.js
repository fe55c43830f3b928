// @supabase/realtime-js (the version pinned in package.json) against the real server binary
// at /realtime/v1/websocket, used as its documentation shows with only the URL and the key
// changed (and `transport: ws`, which realtime-js asks for on Node < 22): subscribe,
// broadcast to others and to self, broadcast with ack, presence track/untrack/sync with two
// clients, token refresh, a channel of another wedding refused, a mixed session with a
// native /ws client, a server restart during which messages are published, then all
// delivered (replay from the durable log), a network outage, and the guide's example page
// (test/pages/realtime.html) in chromium.
import test from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import { RealtimeClient } from '@supabase/realtime-js';
import { RingbearerClient } from '../ringbearer.js';
import { TestServer, waitFor } from './server.js';
import { launch, pageServer } from './browser.js';

const CH = 'wedding:main:w-1';

/** A realtime-js client for `token`, against `addr` (host:port). */
function realtime(addr, token, opts = {}) {
  return new RealtimeClient(`ws://${addr}/realtime/v1`, {
    params: { apikey: token },
    transport: WebSocket,
    reconnectAfterMs: () => 100,
    ...opts,
  });
}

/** Subscribes `channel`; resolves with the status once it is SUBSCRIBED, or rejects. */
function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve(status);
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status));
    });
  });
}

/** The status a refused subscribe ends in, with its error. */
function refused(channel) {
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status !== 'SUBSCRIBED') resolve({ status, err });
    });
  });
}

async function createChannel(server, name, wedding) {
  const token = server.token('u-admin', 'org-1', 'admin', ['*']);
  const r = await server.rest('POST', '/api/websocket/channels/create', {
    token,
    body: { name, type: 'shared', wedding_id: wedding },
  });
  assert.equal(r.status, 200, r.text);
}

test('realtime-js: broadcast to others, to self, with ack; presence; refusals; token refresh', async (t) => {
  const server = await TestServer.start();
  const clients = [];
  t.after(async () => {
    for (const c of clients) await c.disconnect();
    await server.stop();
  });
  await createChannel(server, CH, 'w-1');
  await createChannel(server, 'wedding:main:w-2', 'w-2');
  const a = realtime(server.addr, server.token('u-a', 'org-1', 'coordinator', ['w-1']));
  const b = realtime(server.addr, server.token('u-b', 'org-1', 'photographer', ['w-1']));
  clients.push(a, b);

  const seenA = [];
  const seenB = [];
  const syncs = [];
  const leaves = [];
  const chA = a.channel(CH, { config: { broadcast: { ack: true } } })
    .on('broadcast', { event: 'cake' }, (m) => seenA.push(m))
    .on('presence', { event: 'sync' }, () => syncs.push(Object.keys(chA.presenceState())))
    .on('presence', { event: 'leave' }, (e) => leaves.push(e));
  const chB = b.channel(CH, { config: { broadcast: { self: true }, presence: { key: 'photo-desk' } } })
    .on('broadcast', { event: '*' }, (m) => seenB.push(m));
  await Promise.all([subscribed(chA), subscribed(chB)]);

  // With ack: answered once stored.
  assert.equal(await chA.send({ type: 'broadcast', event: 'cake', payload: { at: '21:15' } }), 'ok');
  await waitFor(() => seenB.length === 1, 'a\'s broadcast at b');
  assert.equal(seenB[0].event, 'cake');
  assert.deepEqual(seenB[0].payload, { at: '21:15' });
  assert.equal(seenB[0].meta.id, 1);
  assert.equal(seenB[0].meta.sender.user_id, 'u-a');
  // b hears itself (broadcast.self), a does not hear itself (the default).
  assert.equal(await chB.send({ type: 'broadcast', event: 'cake', payload: { n: 2 } }), 'ok');
  await waitFor(() => seenB.length === 2 && seenA.length === 1, 'b\'s broadcast at a and b');
  assert.deepEqual(seenA.map((m) => m.payload), [{ n: 2 }]);
  assert.deepEqual(seenB.map((m) => m.meta.id), [1, 2]);

  // Presence: track with two clients, sync, untrack.
  assert.equal(await chA.track({ activity: 'ceremony' }), 'ok');
  assert.equal(await chB.track({ activity: 'photography', location: 'x-aisle' }), 'ok');
  await waitFor(() => Object.keys(chA.presenceState()).length === 2, 'two presences at a');
  const state = chA.presenceState();
  assert.equal(state['u-a'][0].activity, 'ceremony');
  // b's presence is under the key it joined with (config.presence.key), a's under its user id.
  assert.equal(state['photo-desk'][0].location, 'x-aisle');
  assert.ok(state['photo-desk'][0].presence_ref, 'presence_ref');
  await waitFor(() => Object.keys(chB.presenceState()).length === 2, 'two presences at b');
  assert.equal(await chB.untrack(), 'ok');
  await waitFor(() => !chA.presenceState()['photo-desk'], 'b left a\'s presence');
  assert.equal(leaves.at(-1).key, 'photo-desk');
  assert.deepEqual(Object.keys(chA.presenceState()), ['u-a']);
  assert.ok(syncs.length > 0);

  // Token refresh in band (setAuth → access_token), then still delivered.
  await a.setAuth(server.token('u-a', 'org-1', 'coordinator', ['w-1'], 7200));
  assert.equal(await chB.send({ type: 'broadcast', event: 'cake', payload: { n: 3 } }), 'ok');
  await waitFor(() => seenA.length === 2, 'delivered after the refresh');

  // Another wedding's channel, an invalid topic, a channel never created: refused with the code.
  const other = await refused(a.channel('wedding:main:w-2'));
  assert.equal(other.status, 'CHANNEL_ERROR');
  assert.match(other.err.message, /WS_WEDDING_ISOLATION_VIOLATION/);
  const invalid = await refused(a.channel('wedding:*:w-1'));
  assert.match(invalid.err.message, /WS_INVALID_CHANNEL/);
  const missing = await refused(a.channel('wedding:main:w-1-nope'));
  assert.match(missing.err.message, /WS_CHANNEL_NOT_FOUND/);
  // postgres_changes: a clear error, not a silent success.
  const pg = a.channel('wedding:main:w-1-pg').on('postgres_changes', { event: '*', schema: 'public' }, () => {});
  const pgr = await refused(pg);
  assert.match(pgr.err.message, /postgres_changes is not supported/);
  // The refused joins left the good channel working.
  assert.equal(await chB.send({ type: 'broadcast', event: 'cake', payload: { n: 4 } }), 'ok');
  await waitFor(() => seenA.length === 3, 'delivered after the refusals');

  // Leave: removeChannel answers ok.
  assert.equal(await a.removeChannel(chA), 'ok');
});

test('realtime-js and a native /ws client on one channel, both ways; vsn 1.0.0', async (t) => {
  const server = await TestServer.start();
  const rt = realtime(server.addr, server.token('u-rt', 'org-1', 'coordinator', ['w-1']), { vsn: '1.0.0' });
  const native = new RingbearerClient({ url: server.wsUrl, WebSocket, token: server.token('u-ws', 'org-1', 'photographer', ['w-1']) });
  t.after(async () => {
    native.close();
    await rt.disconnect();
    await server.stop();
  });
  await native.connect();
  await native.create({ name: CH, wedding_id: 'w-1' });
  const nativeSeen = [];
  native.on('message', (m) => nativeSeen.push(m));
  await native.subscribe(CH);
  const rtSeen = [];
  const ch = rt.channel(CH).on('broadcast', { event: 'timeline:update' }, (m) => rtSeen.push(m));
  await subscribed(ch);

  await native.publish({ channel: CH, type: 'timeline_change', event: 'timeline:update', payload: { cake: '21:15' } });
  await waitFor(() => rtSeen.length === 1, '/ws publish at realtime-js');
  assert.deepEqual(rtSeen[0].payload, { cake: '21:15' });
  assert.equal(rtSeen[0].meta.type, 'timeline_change');

  assert.equal(await ch.send({ type: 'broadcast', event: 'timeline:update', payload: { cake: '21:30' } }), 'ok');
  await waitFor(() => nativeSeen.length === 2, 'realtime-js broadcast at /ws');
  assert.equal(nativeSeen[1].type, 'broadcast');
  assert.equal(nativeSeen[1].event, 'timeline:update');
  assert.deepEqual(nativeSeen[1].payload, { cake: '21:30' });
  assert.equal(nativeSeen[1].sender.user_id, 'u-rt');

  // realtime-js's REST path (send() on a channel it has not joined posts to
  // /realtime/v1/api/broadcast with its apikey): stored and delivered to both.
  const warn = console.warn;
  console.warn = () => {};
  try {
    const backend = realtime(server.addr, server.token('u-api', 'org-1', 'coordinator', ['w-1']));
    assert.equal(await backend.channel(CH).send({ type: 'broadcast', event: 'timeline:update', payload: { cake: '22:00' } }), 'ok');
  } finally {
    console.warn = warn;
  }
  await waitFor(() => nativeSeen.length === 3 && rtSeen.length === 2, 'the REST broadcast at both');
  assert.deepEqual(nativeSeen[2].payload, { cake: '22:00' });
  assert.equal(rtSeen[1].meta.id, 3);
});

/** A TCP relay to the server that the test can cut and restore (a network outage). */
async function relay(getTarget) {
  const sockets = new Set();
  let open = true;
  const srv = net.createServer((c) => {
    if (!open) return c.destroy();
    const u = net.connect(getTarget().port, '127.0.0.1');
    for (const s of [c, u]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => { sockets.delete(s); c.destroy(); u.destroy(); });
    }
    c.pipe(u);
    u.pipe(c);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    addr: `127.0.0.1:${srv.address().port}`,
    cut() { open = false; for (const s of sockets) s.destroy(); },
    restore() { open = true; },
    close() { open = false; for (const s of sockets) s.destroy(); srv.close(); },
  };
}

test('realtime-js across a server restart: messages published meanwhile are all delivered', async (t) => {
  const server = await TestServer.start();
  const link = await relay(() => server);
  const rt = realtime(link.addr, server.token('u-rt', 'org-1', 'couple', ['w-1']));
  const writer = new RingbearerClient({ url: server.wsUrl, WebSocket, token: server.token('u-w', 'org-1', 'coordinator', ['w-1']) });
  t.after(async () => {
    writer.close();
    await rt.disconnect();
    link.close();
    await server.stop();
  });
  await writer.connect();
  await writer.create({ name: CH, wedding_id: 'w-1' });
  const seen = [];
  const since = Date.now() - 1000;
  const ch = rt
    .channel(CH, { config: { private: true, broadcast: { replay: { since, limit: 50 } } } })
    .on('broadcast', { event: '*' }, (m) => seen.push(m));
  await subscribed(ch);
  await writer.publish({ channel: CH, type: 'general', event: 'n', payload: { n: 1 } });
  await waitFor(() => seen.length === 1, 'the first message live');

  // The realtime-js client loses its network; the server is killed and restarted; two
  // messages are published while the client is away.
  link.cut();
  await waitFor(() => ch.state !== 'joined', 'realtime-js noticed');
  await server.killAndRestart();
  for (const n of [2, 3]) await writer.publish({ channel: CH, type: 'general', event: 'n', payload: { n } });
  link.restore();
  await waitFor(() => new Set(seen.map((m) => m.meta.id)).size === 3, 'all three delivered');
  const ids = [...new Set(seen.map((m) => m.meta.id))];
  assert.deepEqual(ids, [1, 2, 3]);
  assert.ok(seen.filter((m) => m.meta.id >= 2).every((m) => m.meta.replayed === true));
});

test('realtime-js after a network outage: its durable subscription hands over what it missed', async (t) => {
  const server = await TestServer.start();
  const link = await relay(() => server);
  // A short heartbeat: the door acknowledges what it delivered at each one.
  const rt = realtime(link.addr, server.token('u-rt', 'org-1', 'couple', ['w-1']), { heartbeatIntervalMs: 200 });
  const writer = new RingbearerClient({ url: server.wsUrl, WebSocket, token: server.token('u-w', 'org-1', 'coordinator', ['w-1']) });
  t.after(async () => {
    writer.close();
    await rt.disconnect();
    link.close();
    await server.stop();
  });
  await writer.connect();
  await writer.create({ name: CH, wedding_id: 'w-1' });
  const seen = [];
  const ch = rt.channel(CH).on('broadcast', { event: '*' }, (m) => seen.push(m));
  await subscribed(ch);
  await writer.publish({ channel: CH, type: 'general', event: 'n', payload: { n: 1 } });
  await waitFor(() => seen.length === 1, 'the first message live');
  // Message 1 is acknowledged for u-rt's subscription at the heartbeat after the one that
  // followed it (the door acknowledges what the client provably received): three answered
  // heartbeats from now include both.
  let beats = 0;
  rt.onHeartbeat((status) => { if (status === 'ok') beats += 1; });
  await waitFor(() => beats >= 3, 'three heartbeats');

  link.cut();
  await waitFor(() => ch.state !== 'joined', 'realtime-js noticed');
  for (const n of [2, 3]) await writer.publish({ channel: CH, type: 'general', event: 'n', payload: { n } });
  link.restore();
  await waitFor(() => seen.length >= 3, 'the missed messages');
  // Exactly what it missed, once, in order, marked as replayed.
  assert.deepEqual(seen.map((m) => m.meta.id), [1, 2, 3]);
  assert.deepEqual(seen.slice(1).map((m) => m.meta.replayed), [true, true]);
});

test('the guide\'s example page in a browser: realtime-js from its package, URL and key changed only', async (t) => {
  const server = await TestServer.start();
  const pages = await pageServer();
  const browser = await launch();
  const native = new RingbearerClient({ url: server.wsUrl, WebSocket, token: server.token('u-ws', 'org-1', 'coordinator', ['w-1']) });
  t.after(async () => {
    native.close();
    await browser.close();
    await pages.close();
    await server.stop();
  });
  await native.connect();
  await native.create({ name: CH, wedding_id: 'w-1' });
  const nativeSeen = [];
  native.on('message', (m) => nativeSeen.push(m));
  await native.subscribe(CH);
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  const q = new URLSearchParams({
    url: `ws://${server.addr}/realtime/v1`,
    key: server.token('u-page', 'org-1', 'photographer', ['w-1']),
    channel: CH,
  });
  await page.goto(`${pages.url}/realtime.html?${q}`);
  await page.waitForFunction(() => window.sent === 'ok', null, { timeout: 10000 });
  assert.equal(await page.evaluate(() => window.status), 'SUBSCRIBED');
  // Its broadcast is stored and reaches the /ws client; the /ws client's reaches the page.
  await waitFor(() => nativeSeen.length === 1, 'the page\'s broadcast at /ws');
  assert.deepEqual(nativeSeen[0].payload, { cake: '21:15' });
  assert.equal(nativeSeen[0].sender.user_id, 'u-page');
  await native.publish({ channel: CH, type: 'timeline_change', event: 'timeline:update', payload: { cake: '21:30' } });
  await page.waitForFunction(() => window.received.length === 1, null, { timeout: 10000 });
  assert.deepEqual(await page.evaluate(() => window.received[0].payload), { cake: '21:30' });
  // Its presence, as realtime-js shows it.
  await page.waitForFunction(() => window.presence?.['u-page']?.[0]?.activity === 'setup', null, { timeout: 10000 });
  assert.deepEqual(errors, []);
});
