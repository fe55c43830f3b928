// The admin page at /admin in a real browser: sign-in with an organization admin token
// (and an API key), the live figures equal what the test drove, another organization's
// audit records stay out, the channel list and audit filters work, and a 1280×800
// screenshot for a person to look at (js/test-output/admin.png).
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
  const connect = async (sub, org, role, weddings) => {
    const c = new RingbearerClient({ url: server.wsUrl, WebSocket, token: server.token(sub, org, role, weddings) });
    clients.push(c);
    await c.connect();
    return c;
  };
  const coord = await connect('u-coord', 'org-1', 'coordinator', ['w-1', 'w-2']);
  const photo = await connect('u-photo', 'org-1', 'photographer', ['w-1']);
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

  // The channel list: the admin's two subscriptions; only its organization's.
  await page.waitForFunction(() => document.querySelectorAll('#ch-rows tr').length === 2, null, { timeout: WAIT });
  const names = await page.$$eval('#ch-rows tr', (rows) => rows.map((r) => r.dataset.channel));
  assert.deepEqual(names, chans);
  // Unread for the admin (never connected): w-1 got n = 2, 4, 6; w-2 got n = 1, 3, 5, 7.
  const unread = await page.$$eval('#ch-rows tr', (rows) => rows.map((r) => r.children[3].textContent));
  assert.deepEqual(unread, ['3', '4']);

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

  mkdirSync(OUT, { recursive: true });
  await page.fill('#a-channel', '');
  await page.click('#audit-form button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#audit-rows tr').length >= 4, null, { timeout: WAIT });
  await page.screenshot({ path: join(OUT, 'admin.png') });

  // An API key signs in too (the service role of org-1).
  const keyed = await browser.newPage();
  await keyed.goto(`${server.httpUrl}/admin`);
  await keyed.fill('#credential', API_KEY);
  await keyed.click('#login button[type=submit]');
  await keyed.waitForFunction(() => document.getElementById('m-messages').textContent === '10', null, { timeout: WAIT });
  await keyed.waitForFunction(() => document.querySelectorAll('#audit-rows tr[data-action="create"]').length === 2, null, { timeout: WAIT });
});
