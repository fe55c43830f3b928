// End-to-end in a real browser (Debian's chromium via playwright-core) against the real
// server: a plain page loading /client/ringbearer.js with no bundler; a photographer's
// page with eight weddings and a couple's page per wedding (isolation, order); the offline
// queue under network emulation; recovery across a server kill and restart; token expiry
// refreshed through the token callback.
import test from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RingbearerClient } from '../ringbearer.js';
import { TestServer, waitFor } from './server.js';
import { launch, pageServer } from './browser.js';

const WAIT = 10000;
let server, pages, browser, publisher;
const weddings = Array.from({ length: 12 }, (_, i) => `w-${i + 1}`);

test.before(async () => {
  server = await TestServer.start('[io]\ntoken_expiry_warning_secs = 60\ntoken_leeway_secs = 0\n');
  pages = await pageServer();
  browser = await launch();
  publisher = new RingbearerClient({
    url: server.wsUrl,
    WebSocket,
    getToken: async () => server.token('u-coord', 'org-1', 'coordinator', weddings, 3600, { tier: 'enterprise' }),
    backoff: { initialMs: 50, maxMs: 500 },
  });
  await publisher.connect();
  for (const w of weddings) await publisher.create({ name: `wedding:main:${w}`, type: 'shared', wedding_id: w });
});

test.after(async () => {
  publisher?.close();
  await browser?.close();
  await pages?.close();
  await server?.stop();
});

/**
 * Opens the test page in its own browser context as `user` with `weddings`, subscribed
 * to `channels`. `ttls` are the lifetimes (seconds) of the tokens the page's token
 * callback gets, one per call (the last repeats).
 */
async function openApp({ user, role = 'couple', weddings: ws, channels, ttls = [3600] }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${user}] page error:`, e));
  let calls = 0;
  await page.exposeFunction('rbToken', () => {
    const ttl = ttls[Math.min(calls, ttls.length - 1)];
    calls += 1;
    return server.token(user, 'org-1', role, ws, ttl);
  });
  const url = `${pages.url}/app.html?server=${encodeURIComponent(server.httpUrl)}&channels=${encodeURIComponent(channels.join(','))}`;
  await page.goto(url);
  await page.waitForFunction(() => window.ready === true, null, { timeout: WAIT });
  return { context, page, tokenCalls: () => calls };
}

const received = (page, ch) => page.evaluate((c) => window.received[c] ?? [], ch);
const publish = (ch, n, extra = {}) => publisher.publish({ channel: ch, type: 'general', payload: { n, ...extra } });
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

function assertInOrderOnce(list, ns, what) {
  const ids = list.map((m) => m.id);
  assert.deepEqual(list.map((m) => m.n), ns, `${what}: payloads`);
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `${what}: ids increasing ${ids}`);
}

test('a plain page loads /client/ringbearer.js from the server and publishes', async () => {
  const r = await fetch(`${server.httpUrl}/client/ringbearer.js`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.match(r.headers.get('cache-control'), /max-age=/);
  const { context, page } = await openApp({ user: 'u-plain', role: 'coordinator', weddings: ['w-11'], channels: ['wedding:main:w-11'] });
  try {
    const res = await page.evaluate(() => window.rb.publish({ channel: 'wedding:main:w-11', type: 'general', payload: { n: 1 } }));
    assert.equal(res.id, 1);
    await page.waitForFunction(() => window.received['wedding:main:w-11'].length === 1, null, { timeout: WAIT });
    assert.match(await page.textContent('section[data-channel="wedding:main:w-11"]'), /#1 \{"n":1\}/);
  } finally {
    await context.close();
  }
});

test('photographer with eight weddings open, a couple per wedding: each sees only its own, in order', async () => {
  const eight = weddings.slice(0, 8);
  const chans = eight.map((w) => `wedding:main:${w}`);
  const photographer = await openApp({ user: 'u-photo', role: 'photographer', weddings: eight, channels: chans });
  const couples = await Promise.all(eight.map((w) => openApp({ user: `u-couple-${w}`, weddings: [w], channels: [`wedding:main:${w}`] })));
  try {
    // A couple cannot reach another wedding.
    const refused = await couples[0].page.evaluate(() => window.rb.subscribe('wedding:main:w-2').then(() => 'subscribed', (e) => e.code));
    assert.equal(refused, 'WS_WEDDING_ISOLATION_VIOLATION');
    for (const n of range(1, 5)) await Promise.all(eight.map((w) => publish(`wedding:main:${w}`, n, { wedding: w })));
    await photographer.page.waitForFunction((cs) => cs.every((c) => window.received[c].length === 5), chans, { timeout: WAIT });
    for (const [i, w] of eight.entries()) {
      const ch = `wedding:main:${w}`;
      assertInOrderOnce(await received(photographer.page, ch), range(1, 5), `photographer ${ch}`);
      const { page } = couples[i];
      await page.waitForFunction((c) => window.received[c].length === 5, ch, { timeout: WAIT });
      const all = await page.evaluate(() => window.received);
      assert.deepEqual(Object.keys(all), [ch], `couple of ${w} has only its channel`);
      assertInOrderOnce(all[ch], range(1, 5), `couple ${w}`);
      const text = await page.textContent('body');
      for (const other of eight) if (other !== w) assert.ok(!text.includes(`"${other}"`), `couple of ${w} shows ${other}`);
    }
    // The photographer's page shows each wedding in its own section.
    const text = await photographer.page.textContent(`section[data-channel="wedding:main:w-3"]`);
    assert.ok(text.includes('"w-3"') && !text.includes('"w-4"'));
  } finally {
    await Promise.all([photographer, ...couples].map((p) => p.context.close()));
  }
});

test('offline: messages published meanwhile and the page\'s own publishes arrive once, in order, when back', async () => {
  const ch = 'wedding:main:w-9';
  const app = await openApp({ user: 'u-off', weddings: ['w-9'], channels: [ch] });
  const observer = [];
  const off = publisher.on('message', (m) => m.channel === ch && observer.push(m));
  await publisher.subscribe(ch);
  try {
    for (const n of range(1, 2)) await publish(ch, n);
    await app.page.waitForFunction((c) => window.received[c].length === 2, ch, { timeout: WAIT });
    await app.context.setOffline(true);
    await app.page.waitForFunction(() => window.rb.state === 'reconnecting', null, { timeout: WAIT });
    for (const n of range(3, 7)) await publish(ch, n);
    // The page publishes while offline: the promise waits in the outbox.
    await app.page.evaluate((c) => {
      window.offlinePublish = window.rb.publish({ channel: c, type: 'general', payload: { n: 100 } }).then((r) => r.id);
    }, ch);
    assert.equal(await app.page.evaluate(() => window.rb.outboxSize), 1);
    assert.equal((await received(app.page, ch)).length, 2, 'nothing arrives while offline');
    const back = Date.now();
    await app.context.setOffline(false);
    await app.page.waitForFunction((c) => window.received[c].length >= 8, ch, { timeout: WAIT });
    const ms = Date.now() - back;
    const id = await app.page.evaluate(() => window.offlinePublish);
    assert.equal(id, 8);
    await app.page.evaluate(() => window.rb.ping());
    assertInOrderOnce(await received(app.page, ch), [...range(1, 7), 100], 'page after offline');
    await waitFor(() => observer.some((m) => m.payload.n === 100), 'the offline publish at the observer');
    assert.equal(observer.filter((m) => m.payload.n === 100).length, 1);
    console.log(`# offline → back: all missed messages in ${ms} ms`);
  } finally {
    off();
    await publisher.unsubscribe(ch);
    await app.context.close();
  }
});

test('server killed and restarted: the page resumes with every missed message in under 3 s', async () => {
  const ch = 'wedding:main:w-10';
  const app = await openApp({ user: 'u-restart', weddings: ['w-10'], channels: [ch] });
  try {
    for (const n of range(1, 3)) await publish(ch, n);
    await app.page.waitForFunction((c) => window.received[c].length === 3, ch, { timeout: WAIT });
    // Kill the server while the page is up: it sees the loss and reconnects to the new process.
    await server.killAndRestart();
    await app.page.waitForFunction(() => window.states.includes('reconnecting') && window.rb.state === 'open', null, { timeout: WAIT });
    for (const n of range(4, 5)) await publish(ch, n);
    await app.page.waitForFunction((c) => window.received[c].length === 5, ch, { timeout: WAIT });
    // Messages stored while the page was away (offline), across another kill and restart,
    // come back from the log on resume.
    await app.context.setOffline(true);
    await app.page.waitForFunction(() => window.rb.state === 'reconnecting', null, { timeout: WAIT });
    for (const n of range(6, 7)) await publish(ch, n);
    await server.killAndRestart();
    for (const n of range(8, 9)) await publish(ch, n);
    const back = Date.now();
    await app.context.setOffline(false);
    await app.page.waitForFunction((c) => window.received[c].length >= 9, ch, { timeout: 3000 });
    const ms = Date.now() - back;
    await app.page.evaluate(() => window.rb.ping());
    assertInOrderOnce(await received(app.page, ch), range(1, 9), 'page after restarts');
    console.log(`# restart + offline → back: every missed message in ${ms} ms`);
  } finally {
    await app.context.close();
  }
});

test('token expiry: the token callback refreshes it and no message is lost', async () => {
  const ch = 'wedding:main:w-12';
  // The first token lives 3 s: token_expiring comes at once (the warning is 60 s) and the
  // server would close at its exp (leeway 0) unless the page refreshes it.
  const app = await openApp({ user: 'u-token', weddings: ['w-12'], channels: [ch], ttls: [3, 3600] });
  const expiresAtMs = Date.now() + 3000;
  try {
    await waitFor(() => app.tokenCalls() === 2, 'the refresh through the token callback');
    let n = 0;
    while (Date.now() < expiresAtMs + 1500) {
      n += 1;
      await publish(ch, n);
      await app.page.waitForFunction(([c, k]) => window.received[c].length === k, [ch, n], { timeout: WAIT });
      // Pace the driver (not a wait for an event): stay under the channel's 100/min.
      await new Promise((r) => setTimeout(r, 100));
    }
    assertInOrderOnce(await received(app.page, ch), range(1, n), 'page across expiry');
    const states = await app.page.evaluate(() => window.states);
    assert.deepEqual(states, ['connecting', 'open'], 'the connection stayed up');
  } finally {
    await app.context.close();
  }
});
