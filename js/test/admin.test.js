// The admin page at /admin in a real browser: sign-in with an organization admin token
// (and an API key), the live figures equal what the test drove, another organization's
// audit records stay out, the organization's channel list and audit filters work, a
// channel's detail panel shows the subscribers (cursors, unread), presence (activity,
// location) and recent messages the test drove — never a message targeted at someone
// else — the figures and the open detail arriving on the one event stream (no REST polling
// of health or detail; reopened by itself when the server comes back), and a 1280×800
// screenshot of the live figures (js/test-output/admin-figures.png) and one with the panel
// open (js/test-output/admin.png) for a person to look at.
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { RingbearerClient } from '../ringbearer.js';
import { TestServer } from './server.js';
import { launch, OUT } from './browser.js';

const WAIT = 10000;
const API_KEY = 'venue-backend-key-0123456789abcdef';

test('admin page: live figures equal what was driven, only the own organization\'s audit, screenshot', async (t) => {
  const server = await TestServer.start(
    `[[rest.api_keys]]\nname = "venue-backend"\norganization_id = "org-1"\nkey = "${API_KEY}"\n`,
  );
  const browser = await launch();
  const clients = [];
  t.after(async () => {
    for (const c of clients) c.close();
    await browser.close();
    await server.stop();
  });
  const connect = async (sub, org, role, weddings, options = {}) => {
    const c = new RingbearerClient({ url: server.wsUrl, WebSocket, token: server.token(sub, org, role, weddings), ...options });
    clients.push(c);
    await c.connect();
    return c;
  };
  const coord = await connect('u-coord', 'org-1', 'coordinator', ['w-1', 'w-2']);
  // Acks by hand, so its cursor is what the test says.
  const photo = await connect('u-photo', 'org-1', 'photographer', ['w-1'], { autoAck: false });
  const couple = await connect('u-couple', 'org-1', 'couple', ['w-2']);
  const other = await connect('u-other', 'org-2', 'coordinator', ['w-9']);
  const chans = ['wedding:main:w-1', 'wedding:main:w-2'];
  await coord.create({ name: chans[0], wedding_id: 'w-1' });
  await coord.create({ name: chans[1], wedding_id: 'w-2' });
  await other.create({ name: 'wedding:main:w-9', wedding_id: 'w-9' });
  await photo.subscribe(chans[0]);
  await couple.subscribe(chans[1]);
  await other.subscribe('wedding:main:w-9');
  const admin = server.token('u-admin', 'org-1', 'admin', ['*']);
  for (const ch of chans) {
    const r = await server.rest('POST', '/api/websocket/channels/subscribe', { token: admin, body: { channel_name: ch } });
    assert.equal(r.status, 200, r.text);
  }
  for (let n = 1; n <= 7; n++) await coord.publish({ channel: chans[n % 2], type: 'general', payload: { n } });

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  // Every request the page makes: the live parts must come from the event stream alone.
  const requests = [];
  page.on('request', (r) => requests.push(new URL(r.url()).pathname));
  const made = (path) => requests.filter((p) => p === path).length;
  const resp = await page.goto(`${server.httpUrl}/admin`);
  assert.equal(resp.status(), 200);
  assert.equal(resp.headers()['content-type'], 'text/html; charset=utf-8');
  assert.match(resp.headers()['cache-control'], /no-store/);
  assert.match(resp.headers()['content-security-policy'], /default-src 'none'/);

  // A non-admin is refused at sign-in.
  await page.fill('#credential', server.token('u-photo', 'org-1', 'photographer', ['w-1']));
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('WS_FORBIDDEN'), null, { timeout: WAIT });

  await page.fill('#credential', admin);
  await page.click('#login button[type=submit]');
  const shows = (id, v) => page.waitForFunction(([i, x]) => document.getElementById(i).textContent === x, [id, String(v)], { timeout: WAIT });
  await shows('m-connections', 4);
  await shows('m-channels', 3);
  await shows('m-messages', 7);
  await shows('m-saturday', 'off');
  await shows('status', 'healthy');
  // Deliveries: each message went to its one subscribed connection.
  await shows('m-deliveries', 7);
  assert.ok(Number(await page.textContent('#m-rate')) > 0, 'messages/s over the window');
  // The live figures as a person sees them (js/test-output/admin-figures.png).
  await page.screenshot({ path: join(OUT, 'admin-figures.png') });

  // The channel list: every channel of its organization (org-2's w-9 stays out), with
  // members (the admin and one user each) and online users.
  await page.waitForFunction(() => document.querySelectorAll('#ch-rows tr').length === 2, null, { timeout: WAIT });
  const names = await page.$$eval('#ch-rows tr', (rows) => rows.map((r) => r.dataset.channel));
  assert.deepEqual(names, chans);
  const cols = await page.$$eval('#ch-rows tr', (rows) => rows.map((r) => [...r.children].slice(1, 5).map((td) => td.textContent)));
  assert.deepEqual(cols, [['shared', 'w-1', '2', '1'], ['shared', 'w-2', '2', '1']]);

  // The audit log: org-1's creates and subscribes, never org-2's.
  await page.waitForFunction(() => document.querySelectorAll('#audit-rows tr[data-action="create"]').length === 2, null, { timeout: WAIT });
  const actors = await page.$$eval('#audit-rows tr', (rows) => rows.map((r) => r.children[1].textContent));
  assert.ok(actors.length >= 4, `audit rows ${actors}`);
  assert.ok(!actors.includes('u-other'), 'org-2 stays out');
  // Filter by channel.
  await page.fill('#a-channel', chans[1]);
  await page.click('#audit-form button[type=submit]');
  await page.waitForFunction((c) => {
    const rows = [...document.querySelectorAll('#audit-rows tr')];
    return rows.length > 0 && rows.every((r) => r.children[3].textContent === c);
  }, chans[1], { timeout: WAIT });

  // Live: more traffic shows up without a reload.
  for (let n = 8; n <= 10; n++) await coord.publish({ channel: chans[0], type: 'general', payload: { n } });
  await shows('m-messages', 10);
  await shows('m-deliveries', 10);
  assert.equal(made('/api/websocket/health'), 0, 'no polling of health');
  assert.equal(made('/api/websocket/events'), 1, `one stream, never reopened: ${requests}`);

  mkdirSync(OUT, { recursive: true });
  await page.fill('#a-channel', '');
  await page.click('#audit-form button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#audit-rows tr').length >= 4, null, { timeout: WAIT });

  // A channel's detail: what the test drove on w-1 (ids 1-3: n = 2, 4, 6; ids 4-6: n = 8-10),
  // the photographer acks 2 and says where it is; a message for the photographer alone is
  // not the admin's to see.
  photo.ack(chans[0], 2);
  await photo.setPresence(chans[0], { activity: 'ceremony', location: 'ceremony_area' });
  await coord.publish({ channel: chans[0], type: 'general', payload: { n: 'private' }, targetUserId: 'u-photo' });
  await page.click(`#ch-rows tr[data-channel="${chans[0]}"]`);
  await page.waitForFunction(() => !document.getElementById('detail').hidden, null, { timeout: WAIT });
  await shows('d-name', chans[0]);
  await shows('d-last', 7);
  const table = (id) => page.$$eval(`#${id} tr`, (rows) => rows.map((r) => [...r.children].map((td) => td.textContent)));
  // Subscribers, sorted by organization then user: the admin (enrolled by REST, never
  // online; unread: the 6 open ones) and the photographer (online, cursor 2, unread: ids
  // 3-7, its own targeted one included).
  await page.waitForFunction(() => document.querySelector('#d-subs tr[data-user="org-1/u-photo"]')?.children[4].textContent === '2', null, { timeout: WAIT });
  assert.deepEqual(await table('d-subs'), [
    ['org-1', 'u-admin', 'offline', '0', '0', '6'],
    ['org-1', 'u-photo', 'online', '1', '2', '5'],
  ]);
  const presence = await table('d-presence');
  assert.equal(presence.length, 1, JSON.stringify(presence));
  assert.deepEqual(presence[0].slice(0, 5), ['u-photo', 'org-1', 'photographer', 'ceremony', 'ceremony_area']);
  const msgs = await table('d-messages');
  assert.deepEqual(msgs.map((m) => m[0]), ['1', '2', '3', '4', '5', '6'], 'id 7 was for the photographer alone');
  assert.deepEqual(msgs.map((m) => JSON.parse(m[4]).n), [2, 4, 6, 8, 9, 10]);
  assert.ok(msgs.every((m) => m[2] === 'org-1/u-coord'));
  // Live while open: a new message and a presence change show up without a click.
  await coord.publish({ channel: chans[0], type: 'general', payload: { n: 11 } });
  await photo.setPresence(chans[0], { activity: 'photography', location: 'x-garden' });
  await page.waitForFunction(() => {
    const ids = [...document.querySelectorAll('#d-messages tr')].map((r) => r.dataset.id);
    const p = document.querySelector('#d-presence tr[data-user="org-1/u-photo"]');
    return ids.at(-1) === '8' && p?.children[4].textContent === 'x-garden';
  }, null, { timeout: WAIT });
  assert.equal(made('/api/websocket/channels/detail'), 0, 'no polling of the detail');
  assert.equal(made('/api/websocket/health'), 0, 'no polling of health');
  assert.equal(made('/api/websocket/events'), 2, `the stream reopened once, with the channel: ${requests}`);
  await page.$eval('#detail', (el) => el.scrollIntoView());
  await page.screenshot({ path: join(OUT, 'admin.png') });

  // Another organization's channel is not the admin's to open: the server refuses it.
  const refused = await page.evaluate(async (token) => {
    const r = await fetch('/api/websocket/channels/detail?channel_name=wedding:main:w-9', { headers: { authorization: `Bearer ${token}` } });
    return [r.status, (await r.json()).error?.code];
  }, admin);
  assert.deepEqual(refused, [403, 'WS_WEDDING_ISOLATION_VIOLATION']);

  // An API key signs in too (the service role of org-1).
  const keyed = await browser.newPage();
  await keyed.goto(`${server.httpUrl}/admin`);
  await keyed.fill('#credential', API_KEY);
  await keyed.click('#login button[type=submit]');
  await keyed.waitForFunction(() => document.getElementById('m-messages').textContent === '12', null, { timeout: WAIT });
  await keyed.waitForFunction(() => document.querySelectorAll('#audit-rows tr[data-action="create"]').length === 2, null, { timeout: WAIT });

  // The stream drops (the server is killed and started again on the same port): the page
  // reopens it by itself and shows the new process's figures (its counters start at 0;
  // the channels come back from the log) and the open channel's detail again.
  const before = made('/api/websocket/events');
  await server.killAndRestart();
  await shows('m-messages', 0);
  await shows('m-channels', 3);
  assert.ok(made('/api/websocket/events') > before, 'the stream was reopened');
  assert.equal(made('/api/websocket/health'), 0, 'no polling of health');
  await page.evaluate(() => { document.getElementById('d-last').textContent = ''; });
  await shows('d-last', 8);
});
