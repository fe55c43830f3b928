// Unit tests of the client's pure parts: backoff bounds, de-duplication per priority
// class, presence folding, error mapping.
import test from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, DedupTracker, applyPresence, RingbearerError, RingbearerClient, serverUrls, MAX_URLS } from '../ringbearer.js';

test('backoff: ceiling grows exponentially and is capped; full jitter stays within it', () => {
  const o = { initialMs: 100, maxMs: 5000, multiplier: 2 };
  assert.equal(backoffDelay(0, { ...o, jitter: false }), 100);
  assert.equal(backoffDelay(3, { ...o, jitter: false }), 800);
  assert.equal(backoffDelay(10, { ...o, jitter: false }), 5000);
  assert.equal(backoffDelay(5000, { ...o, jitter: false }), 5000);
  assert.equal(backoffDelay(3, o, () => 0), 0);
  assert.ok(backoffDelay(3, o, () => 0.999999) <= 800);
  assert.equal(backoffDelay(3, o, () => 0.5), 400);
  for (let a = 0; a < 100; a++) {
    const d = backoffDelay(a, o);
    assert.ok(d >= 0 && d <= 5000, `attempt ${a}: ${d}`);
  }
  // A multiplier under 1 is taken as 1: never shrinking.
  assert.equal(backoffDelay(7, { initialMs: 50, maxMs: 1000, multiplier: 0.5, jitter: false }), 50);
});

test('dedup: repeats dropped per priority class; epoch change resets', () => {
  const t = new DedupTracker();
  const ch = 'wedding:main:w-1';
  assert.ok(t.accept(ch, 5), 'unknown channels pass through');
  t.onSubscribed(ch, 'e1');
  assert.ok(t.accept(ch, 1));
  assert.ok(t.accept(ch, 2));
  assert.ok(!t.accept(ch, 2));
  assert.ok(!t.accept(ch, 1));
  // critical 4 overtakes normal 3 in a backlog: 3 still gets through.
  assert.ok(t.accept(ch, 4, 'critical'));
  assert.ok(t.accept(ch, 3, 'normal'));
  assert.ok(!t.accept(ch, 4, 'critical'));
  // emergency 6 overtakes critical 5: its own class, 5 still gets through.
  assert.ok(t.accept(ch, 6, 'emergency'));
  assert.ok(t.accept(ch, 5, 'critical'));
  assert.ok(!t.accept(ch, 6, 'emergency'));
  assert.deepEqual(t.position(ch), { lastSeenId: 6, epoch: 'e1' });
  t.onSubscribed(ch, 'e1');
  assert.ok(!t.accept(ch, 3));
  t.onSubscribed(ch, 'e2');
  assert.ok(t.accept(ch, 1), 'a new epoch starts over');
  t.forget(ch);
  assert.deepEqual(t.position(ch), { lastSeenId: null, epoch: null });
});

test('presence: list replaces, diff removes leaves then adds joins', () => {
  const m = new Map();
  const e = (c, meta = {}) => ({ user_id: 'u-' + c, connection_id: c, role: 'guest', meta });
  applyPresence(m, { op: 'subscribed', presence: [e('a'), e('b')] });
  assert.deepEqual([...m.keys()], ['a', 'b']);
  applyPresence(m, { op: 'presence_diff', leaves: [e('a')], joins: [e('c'), e('a', { activity: 'x' })] });
  assert.deepEqual([...m.keys()], ['b', 'c', 'a']);
  assert.deepEqual(m.get('a').meta, { activity: 'x' });
  applyPresence(m, { op: 'presence_diff', joins: [e('b')], leaves: [] });
  assert.equal(m.size, 3, 'a join already held changes nothing');
  applyPresence(m, { op: 'presence_state', presence: [e('z')] });
  assert.deepEqual([...m.keys()], ['z']);
});

test('errors carry the SPEC code, retryable and retryAfter', () => {
  const e = RingbearerError.fromFrame({ op: 'error', ref: 'r1', code: 'WS_RATE_LIMITED', message: 'slow down', retryable: true, retry_after: 7 });
  assert.ok(e instanceof Error);
  assert.equal(e.code, 'WS_RATE_LIMITED');
  assert.equal(e.retryAfter, 7);
  assert.equal(e.retryable, true);
  assert.equal(e.ref, 'r1');
  const c = new RingbearerError('CLIENT_TIMEOUT', 'x');
  assert.equal(c.retryable, true);
  assert.equal(c.retryAfter, null);
});

test('constructor refuses a missing url, token or WebSocket', () => {
  assert.throws(() => new RingbearerClient({}), /url/);
  assert.throws(() => new RingbearerClient({ url: 'ws://x/ws', WebSocket: class {} }), /token/);
  if (typeof globalThis.WebSocket !== 'function') {
    assert.throws(() => new RingbearerClient({ url: 'ws://x/ws', token: 't' }), /WebSocket/);
  }
});

test('server urls: url or urls, bounded, no repeats', () => {
  assert.deepEqual(serverUrls({ url: 'ws://a/ws' }), ['ws://a/ws']);
  assert.deepEqual(serverUrls({ urls: ['ws://a/ws', 'ws://b/ws'] }), ['ws://a/ws', 'ws://b/ws']);
  assert.throws(() => serverUrls({ url: 'ws://a/ws', urls: ['ws://b/ws'] }), /not both/);
  assert.throws(() => serverUrls({ urls: [] }), /required/);
  assert.throws(() => serverUrls({ urls: ['ws://a/ws', 'ws://a/ws'] }), /twice/);
  const many = Array.from({ length: MAX_URLS + 1 }, (_, i) => `ws://h${i}/ws`);
  assert.throws(() => serverUrls({ urls: many }), /at most 16/);
  assert.equal(serverUrls({ urls: many.slice(0, MAX_URLS) }).length, MAX_URLS);
});

test('failover order: round robin, each round opens with the backoff delay of its number', async () => {
  const opened = [];
  // A WebSocket whose every connection fails at once.
  class Refused {
    constructor(url) {
      opened.push(url);
      this.readyState = 0;
      setTimeout(() => this.onclose?.({ code: 1006, reason: '' }), 0);
    }
    close() {}
  }
  const urls = ['ws://a/ws', 'ws://b/ws', 'ws://c/ws'];
  const c = new RingbearerClient({
    urls, token: 't', WebSocket: Refused, random: () => 0.5, randomStart: true,
    backoff: { initialMs: 1, maxMs: 4, multiplier: 2, jitter: false },
  });
  const failed = [];
  const done = new Promise((resolve) => c.on('state', (s) => {
    if (s.state !== 'reconnecting') return;
    failed.push(s);
    if (failed.length === 9) resolve();
  }));
  c.connect().catch(() => {});
  await done;
  c.close();
  // randomStart with random() = 0.5 starts at the middle server.
  assert.deepEqual(opened.slice(0, 9), ['b', 'c', 'a', 'b', 'c', 'a', 'b', 'c', 'a'].map((h) => `ws://${h}/ws`));
  assert.deepEqual(failed.map((s) => s.url), opened.slice(0, 9));
  assert.deepEqual(failed.map((s) => s.nextUrl), ['c', 'a', 'b', 'c', 'a', 'b', 'c', 'a', 'b'].map((h) => `ws://${h}/ws`));
  // The first round is the initial connect (no delay); then 1, 2, 4 ms per round.
  assert.deepEqual(failed.map((s) => s.delayMs), [0, 0, 1, 0, 0, 2, 0, 0, 4]);
});
