// @ringbearer/client: a browser and Node (>= 20) client for Ringbearer's WebSocket protocol
// (docs/protocol.md). One ES module, no dependencies; the server serves this very file at
// /client/ringbearer.js so a page needs no bundler.
//
// What it does for the app (the same promises as the Rust client in client/src):
// - connects with a token, or a token callback asked again before every (re)connect and
//   on `token_expiring` (the fresh token is sent with the `token` op);
// - reconnects after any loss with full-jitter exponential backoff (bounded, configurable);
//   the attempt count resets only after a connection stayed up for `backoff.maxMs`;
// - with several server URLs (`urls`), moves to the next one on every failure or loss
//   (round robin; one backoff delay per round of the list);
// - resubscribes every channel with its highest seen id and epoch; de-duplicates by id (per
//   priority class, since the server sends critical before normal within a backlog);
// - acks automatically (cumulative, coalesced per tick) or leaves acks to the app;
// - folds presence (subscribed list, presence_diff, presence_state) into a member list per
//   channel; relays typing;
// - `create`/`subscribe`/`publish`/... return promises that settle on the server's reply,
//   matched by `ref`; errors are `RingbearerError`s with the SPEC code and `retryAfter`;
// - emits connection-state events (connecting, open, reconnecting, closed with reason);
// - keeps publishes made while disconnected in a bounded outbox, each with an idempotency
//   key, and sends them after the resubscribes of the next connection. A publish in flight
//   when the connection drops goes back to the outbox with its key: the server answers a
//   repeated key with the first message's id and delivers nothing twice.
//
// What it does not do: persist anything across page loads (keep `lastSeenId` yourself and
// pass it to `subscribe`), or detect a half-open connection faster than `pingIntervalMs`
// plus `requestTimeoutMs`.

/** Client-side error codes (the server's codes are the SPEC's `WS_*`). */
export const ClientCodes = Object.freeze({
  NOT_CONNECTED: 'CLIENT_NOT_CONNECTED',
  DISCONNECTED: 'CLIENT_DISCONNECTED',
  TIMEOUT: 'CLIENT_TIMEOUT',
  CLOSED: 'CLIENT_CLOSED',
  OUTBOX_FULL: 'CLIENT_OUTBOX_FULL',
  PROTOCOL: 'CLIENT_PROTOCOL',
});

/** @type {Set<string>} */
const RETRYABLE_CLIENT = new Set([
  ClientCodes.NOT_CONNECTED,
  ClientCodes.DISCONNECTED,
  ClientCodes.TIMEOUT,
  ClientCodes.OUTBOX_FULL,
]);

/** An error answered by the server (`code` is `WS_*`) or raised by the client (`CLIENT_*`). */
export class RingbearerError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{retryable?: boolean, retryAfter?: number|null, ref?: string|null}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(`${code}: ${message}`);
    this.name = 'RingbearerError';
    /** @type {string} */
    this.code = code;
    /** @type {string} */
    this.serverMessage = message;
    /** @type {boolean} */
    this.retryable = extra.retryable ?? RETRYABLE_CLIENT.has(code);
    /** Seconds to wait before retrying (from the server's `retry_after`), or null. */
    this.retryAfter = extra.retryAfter ?? null;
    /** @type {string|null} */
    this.ref = extra.ref ?? null;
  }

  /** @param {any} frame an `{"op":"error",…}` frame */
  static fromFrame(frame) {
    const ra = frame.retry_after ?? frame.retryAfter;
    return new RingbearerError(String(frame.code), String(frame.message ?? ''), {
      retryable: Boolean(frame.retryable),
      retryAfter: typeof ra === 'number' ? ra : null,
      ref: typeof frame.ref === 'string' ? frame.ref : null,
    });
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based): uniform in
 * [0, min(maxMs, initialMs × multiplier^attempt)] (full jitter), or the ceiling with
 * `jitter: false`. Pure: `random` returns a number in [0, 1).
 * @param {number} attempt
 * @param {{initialMs?: number, maxMs?: number, multiplier?: number, jitter?: boolean}} [opts]
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
  const initial = opts.initialMs ?? 100;
  const max = opts.maxMs ?? 5000;
  const mult = Math.max(1, opts.multiplier ?? 2);
  const grown = initial * Math.pow(mult, Math.max(0, attempt));
  const ceiling = Number.isFinite(grown) ? Math.min(max, Math.max(grown, Math.min(initial, max))) : max;
  if (opts.jitter === false) return ceiling;
  return Math.min(ceiling, Math.max(0, random() * ceiling));
}

/** Most server URLs one client accepts (`urls`). */
export const MAX_URLS = 16;

/**
 * The server list of `options`: `urls` (an array), or `[url]`. Throws a TypeError when it
 * is missing, empty, longer than MAX_URLS, or repeats a URL.
 * @param {{url?: string, urls?: string[]}} options
 * @returns {string[]}
 */
export function serverUrls(options) {
  if (options.urls !== undefined && options.url !== undefined) {
    throw new TypeError('give options.url or options.urls, not both');
  }
  const urls = options.urls ?? (options.url === undefined ? undefined : [options.url]);
  if (!Array.isArray(urls) || urls.length === 0 || urls.some((u) => typeof u !== 'string' || !u)) {
    throw new TypeError('options.url (a string) or options.urls (a non-empty array of strings) is required');
  }
  if (urls.length > MAX_URLS) throw new TypeError(`${urls.length} server urls; at most ${MAX_URLS}`);
  if (new Set(urls).size !== urls.length) throw new TypeError('options.urls lists a url twice');
  return [...urls];
}

const PRIORITIES = ['emergency', 'critical', 'high', 'normal', 'low'];

/**
 * Per-channel resume positions and de-duplication. A message is new when its id is above
 * the highest id delivered so far in its priority class (ids increase per channel, but a
 * backlog sends critical before normal, so only per class are they increasing).
 */
export class DedupTracker {
  constructor() {
    /** @type {Map<string, {epoch: string, high: (number|null)[]}>} */
    this.channels = new Map();
  }

  /** A `subscribed` reply: remember the channel; a changed epoch resets its marks. */
  onSubscribed(channel, epoch) {
    const s = this.channels.get(channel);
    if (!s) this.channels.set(channel, { epoch, high: PRIORITIES.map(() => null) });
    else if (s.epoch !== epoch) {
      s.epoch = epoch;
      s.high = PRIORITIES.map(() => null);
    }
  }

  /** True (and recorded) if message `id` of class `priority` on `channel` is new. */
  accept(channel, id, priority = 'normal') {
    const s = this.channels.get(channel);
    if (!s) return true;
    let i = PRIORITIES.indexOf(priority);
    if (i < 0) i = PRIORITIES.indexOf('normal');
    const mark = s.high[i];
    if (mark !== null && id <= mark) return false;
    s.high[i] = id;
    return true;
  }

  /** @returns {{lastSeenId: number|null, epoch: string|null}} */
  position(channel) {
    const s = this.channels.get(channel);
    if (!s) return { lastSeenId: null, epoch: null };
    const seen = s.high.filter((x) => x !== null);
    return { lastSeenId: seen.length ? Math.max(...seen) : null, epoch: s.epoch };
  }

  forget(channel) {
    this.channels.delete(channel);
  }

  list() {
    return [...this.channels.keys()];
  }
}

/**
 * Applies a presence frame to a member map keyed by `connection_id`: `subscribed` and
 * `presence_state` replace it, `presence_diff` removes `leaves` then adds `joins`.
 * @param {Map<string, any>} members
 * @param {any} frame
 */
export function applyPresence(members, frame) {
  if (frame.op === 'presence_diff') {
    for (const e of frame.leaves ?? []) members.delete(e.connection_id);
    for (const e of frame.joins ?? []) members.set(e.connection_id, e);
  } else {
    members.clear();
    for (const e of frame.presence ?? []) members.set(e.connection_id, e);
  }
  return members;
}

function randomKey() {
  const c = globalThis.crypto;
  const bytes = new Uint8Array(12);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return 'rb-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const OPEN = 1;
/** A no-op event handler. */
const ignore = () => {};

/** The connection states, in the order a client usually goes through them. */
export const States = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

export class RingbearerClient {
  /**
   * @param {import('./ringbearer.js').ClientOptions} options
   */
  constructor(options) {
    if (!options) throw new TypeError('options are required');
    const urls = serverUrls(options);
    if (options.token == null && typeof options.getToken !== 'function') {
      throw new TypeError('options.token or options.getToken is required');
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('no WebSocket: pass options.WebSocket (in Node 20: the `ws` package)');
    }
    /** Every server, in order. @type {string[]} */
    this.urls = urls;
    this._index = options.randomStart ? Math.min(urls.length - 1, Math.floor((options.random ?? Math.random)() * urls.length)) : 0;
    /** Connect attempts left in the current round of the list before the next backoff delay. */
    this._roundLeft = 0;
    this._WS = WS;
    this._token = options.token ?? null;
    this._getToken = options.getToken ?? null;
    this.backoff = { initialMs: 100, maxMs: 5000, multiplier: 2, jitter: true, ...(options.backoff ?? {}) };
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.pingIntervalMs = options.pingIntervalMs ?? 25000;
    this.autoAck = options.autoAck ?? true;
    this.outboxMax = options.outboxMax ?? 100;
    this.tokenTransport = options.tokenTransport ?? 'protocol';
    this._random = options.random ?? Math.random;
    /** @type {string} */
    this.state = States.IDLE;
    this._listeners = new Map();
    this._ws = null;
    this._nextRef = 1;
    /** @type {Map<string, {resolve: Function, reject: Function, timer: any, kind: string, item?: any, channel?: string}>} */
    this._pending = new Map();
    this._tracker = new DedupTracker();
    /** @type {Map<string, Map<string, any>>} */
    this._presence = new Map();
    this._presenceTotal = new Map();
    /** @type {{frame: any, seq: number, resolve: Function, reject: Function}[]} */
    this._outbox = [];
    /** @type {{resolve: Function, reject: Function, timer: any}[]} */
    this._openWaiters = [];
    this._acks = new Map();
    this._ackScheduled = false;
    this._attempt = 0;
    this._openedAt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._closedByApp = false;
    this._connectPromise = null;
    this._onOnline = () => {
      if (this.state === States.RECONNECTING && this._reconnectTimer) {
        clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
        this._attempt = 0;
        this._open();
      }
    };
    this._onOffline = () => {
      if (this._ws) this._drop(this._ws, 'offline', 0);
    };
  }

  // ---- events -------------------------------------------------------------------------

  /**
   * Listens to `state`, `message`, `presence`, `typing`, `resubscribed`, `token_expiring`,
   * `error`. Returns a function that removes the listener.
   * @param {string} type
   * @param {(ev: any) => void} fn
   */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  _emit(type, ev) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(ev);
      } catch (e) {
        // A listener's bug must not break the client's state machine.
        if (type !== 'error') this._emit('error', e);
        else setTimeout(() => { throw e; });
      }
    }
  }

  /** The server of the current (or last, or next) connection. */
  get url() {
    return this.urls[this._index];
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, ...extra });
  }

  // ---- connection ---------------------------------------------------------------------

  /** Opens the connection; resolves once it is open (retrying with backoff until then). */
  connect() {
    if (this.state === States.CLOSED) return Promise.reject(new RingbearerError(ClientCodes.CLOSED, 'client closed'));
    if (this.state === States.OPEN) return Promise.resolve();
    const p = this._waitOpen(Infinity);
    if (this.state === States.IDLE) {
      if (typeof globalThis.addEventListener === 'function') {
        globalThis.addEventListener('online', this._onOnline);
        globalThis.addEventListener('offline', this._onOffline);
      }
      // The first round: every server once, without delay, then backoff.
      this._roundLeft = this.urls.length - 1;
      this._open();
    }
    return p;
  }

  _waitOpen(timeoutMs) {
    return new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      if (Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(() => {
          this._openWaiters = this._openWaiters.filter((x) => x !== w);
          reject(new RingbearerError(ClientCodes.NOT_CONNECTED, 'not connected within the request timeout'));
        }, timeoutMs);
      }
      this._openWaiters.push(w);
    });
  }

  async _currentToken() {
    if (this._getToken) {
      const t = await this._getToken();
      if (typeof t !== 'string' || !t) throw new TypeError('getToken() must return a token string');
      this._token = t;
    }
    return this._token;
  }

  async _open() {
    if (this._closedByApp) return;
    if (this.state !== States.RECONNECTING) this._setState(States.CONNECTING, { url: this.url });
    let token;
    try {
      token = await this._currentToken();
    } catch (e) {
      this._emit('error', e);
      this._scheduleReconnect('token callback failed', 0);
      return;
    }
    if (this._closedByApp) return;
    let ws;
    const url = this.url;
    try {
      if (this.tokenTransport === 'query') {
        const sep = url.includes('?') ? '&' : '?';
        ws = new this._WS(`${url}${sep}token=${encodeURIComponent(token)}`);
      } else {
        ws = new this._WS(url, ['ringbearer.v1', token]);
      }
    } catch (e) {
      this._emit('error', e);
      this._scheduleReconnect('connect failed', 0);
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._onOpen(ws);
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._onText(typeof ev.data === 'string' ? ev.data : String(ev.data));
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._drop(ws, ev.reason || 'connection closed', ev.code);
    };
    ws.onerror = () => {
      // Always followed by close.
    };
  }

  _onOpen(ws) {
    this._openedAt = Date.now();
    const wasReconnect = this.state === States.RECONNECTING;
    // The next loss starts a new round of the list, with its backoff delay.
    this._roundLeft = 0;
    this._setState(States.OPEN, { reconnect: wasReconnect, url: this.url });
    // Resubscribe every remembered channel first, then the outbox, in this order on the wire.
    for (const channel of this._tracker.list()) {
      const { lastSeenId, epoch } = this._tracker.position(channel);
      const frame = { op: 'subscribe', channel };
      if (lastSeenId !== null) frame.last_seen_id = lastSeenId;
      if (epoch) frame.epoch = epoch;
      this._request(frame, 'resubscribe', { channel }).catch((e) => {
        if (!String(e.code).startsWith('WS_')) return; // the connection went: retried on the next
        this._emit('error', e);
        if (!e.retryable) {
          this._tracker.forget(channel);
          this._presence.delete(channel);
        }
      });
    }
    const queued = this._outbox.splice(0);
    for (const item of queued) this._sendPublish(item);
    const waiters = this._openWaiters.splice(0);
    for (const w of waiters) {
      clearTimeout(w.timer);
      w.resolve();
    }
    this._armPing(ws);
  }

  _armPing(ws) {
    clearTimeout(this._pingTimer);
    if (!(this.pingIntervalMs > 0)) return;
    this._pingTimer = setTimeout(() => {
      if (this._ws !== ws || this.state !== States.OPEN) return;
      this.ping().then(
        () => this._armPing(ws),
        (e) => {
          if (e.code === ClientCodes.TIMEOUT && this._ws === ws) this._drop(ws, 'no pong', 0);
        },
      );
    }, this.pingIntervalMs);
  }

  /** The connection `ws` is gone: fail or requeue what waited on it, then reconnect. */
  _drop(ws, reason, code) {
    if (this._ws !== ws) return;
    this._ws = null;
    clearTimeout(this._pingTimer);
    try {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Not null: closing a socket that is still connecting fires `error`, and Node's `ws`
      // throws an `error` nobody listens to (an uncaught exception in the app).
      ws.onerror = ignore;
      if (ws.readyState <= OPEN) ws.close();
    } catch {
      // already closing
    }
    this._flushAcks(true);
    for (const [ref, p] of this._pending) {
      clearTimeout(p.timer);
      this._pending.delete(ref);
      if (p.kind === 'publish' && p.item) this._outbox.push(p.item);
      else p.reject(new RingbearerError(ClientCodes.DISCONNECTED, 'connection lost before the reply'));
    }
    // Requeued in-flight publishes go before those queued later, keeping the app's order.
    this._outbox.sort((a, b) => a.seq - b.seq);
    if (this._closedByApp) return;
    if (this._openedAt && Date.now() - this._openedAt >= this.backoff.maxMs) this._attempt = 0;
    this._openedAt = 0;
    this._scheduleReconnect(reason, code);
  }

  /**
   * The connection to `this.url` failed or was lost: the next attempt goes to the next
   * server of the list. A round of the list starts with the backoff delay of its number;
   * the other servers of the round are tried at once. With one server: each attempt is a
   * round, exactly the plain backoff.
   */
  _scheduleReconnect(reason, code) {
    if (this._closedByApp) return;
    const url = this.url;
    this._index = (this._index + 1) % this.urls.length;
    let delayMs = 0;
    if (this._roundLeft <= 0) {
      delayMs = backoffDelay(this._attempt, this.backoff, this._random);
      this._attempt += 1;
      this._roundLeft = this.urls.length;
    }
    this._roundLeft -= 1;
    this._setState(States.RECONNECTING, { reason, code, attempt: this._attempt, delayMs, url, nextUrl: this.url });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, delayMs);
  }

  /** Closes for good: calls waiting fail with CLIENT_CLOSED, outbox publishes too. */
  close(reason = 'closed by the app') {
    if (this.state === States.CLOSED) return;
    this._closedByApp = true;
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._pingTimer);
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onOnline);
      globalThis.removeEventListener('offline', this._onOffline);
    }
    this._flushAcks();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = ignore; // see _drop
      try {
        ws.close(1000, 'bye');
      } catch {
        // ignore
      }
    }
    const err = () => new RingbearerError(ClientCodes.CLOSED, 'client closed');
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err());
    }
    this._pending.clear();
    for (const item of this._outbox.splice(0)) item.reject(err());
    for (const w of this._openWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err());
    }
    this._setState(States.CLOSED, { reason });
  }

  // ---- frames in ----------------------------------------------------------------------

  _onText(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      this._emit('error', new RingbearerError(ClientCodes.PROTOCOL, 'a frame that is not JSON'));
      return;
    }
    switch (f.op) {
      case 'message':
        this._deliver(f);
        return;
      case 'presence_diff':
      case 'presence_state':
        this._presenceFrame(f);
        return;
      case 'typing':
        this._emit('typing', { channel: f.channel, userId: f.user_id, role: f.role });
        return;
      case 'token_expiring':
        this._tokenExpiring(f.expires_at);
        return;
      case 'state_overridden':
        this._emit('state_overridden', {
          channel: f.channel, doc: f.doc, version: f.version, yourVersion: f.your_version, by: f.by,
        });
        return;
      default:
        break;
    }
    const p = typeof f.ref === 'string' ? this._pending.get(f.ref) : undefined;
    if (f.op === 'subscribed') this._subscribed(f, p);
    if (!p) {
      if (f.op === 'error') this._emit('error', RingbearerError.fromFrame(f));
      return;
    }
    this._pending.delete(f.ref);
    clearTimeout(p.timer);
    if (f.op === 'error') p.reject(RingbearerError.fromFrame(f));
    else p.resolve(f);
  }

  _subscribed(f, p) {
    const channel = f.channel;
    if (p && p.kind === 'resubscribe' && !this._tracker.channels.has(channel)) return; // unsubscribed meanwhile
    this._tracker.onSubscribed(channel, f.epoch);
    const members = this._presence.get(channel) ?? new Map();
    applyPresence(members, f);
    this._presence.set(channel, members);
    this._presenceTotal.set(channel, f.presence_total ?? members.size);
    if (p && p.kind === 'resubscribe') this._emit('resubscribed', { channel, recovered: Boolean(f.recovered) });
    for (const m of f.messages ?? []) this._deliver(m);
    this._emit('presence', this._presenceEvent(channel));
  }

  _deliver(m) {
    if (!this._tracker.accept(m.channel, m.id, m.priority)) return;
    this._emit('message', m);
    if (this.autoAck && this._tracker.channels.has(m.channel)) {
      const prev = this._acks.get(m.channel) ?? 0;
      if (m.id > prev) this._acks.set(m.channel, m.id);
      if (!this._ackScheduled) {
        this._ackScheduled = true;
        queueMicrotask(() => this._flushAcks());
      }
    }
  }

  _flushAcks(dropOnly = false) {
    this._ackScheduled = false;
    const acks = [...this._acks];
    this._acks.clear();
    if (dropOnly || !this._ws || this._ws.readyState !== OPEN) return;
    for (const [channel, id] of acks) this._send({ op: 'ack', channel, id });
  }

  _presenceFrame(f) {
    const members = this._presence.get(f.channel);
    if (!members) return;
    applyPresence(members, f);
    this._presenceTotal.set(f.channel, f.total ?? members.size);
    this._emit('presence', this._presenceEvent(f.channel));
  }

  _presenceEvent(channel) {
    return { channel, members: this.members(channel), total: this._presenceTotal.get(channel) ?? 0 };
  }

  async _tokenExpiring(expiresAt) {
    this._emit('token_expiring', { expiresAt });
    if (!this._getToken) return;
    try {
      await this.refreshToken();
    } catch (e) {
      this._emit('error', e);
    }
  }

  // ---- frames out ---------------------------------------------------------------------

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  _request(frame, kind, extra = {}) {
    return new Promise((resolve, reject) => {
      const ref = `r${this._nextRef++}`;
      const p = { resolve, reject, kind, timer: null, ...extra };
      p.timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new RingbearerError(ClientCodes.TIMEOUT, `no reply to ${frame.op} within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this._pending.set(ref, p);
      if (!this._send({ ...frame, ref })) {
        clearTimeout(p.timer);
        this._pending.delete(ref);
        reject(new RingbearerError(ClientCodes.NOT_CONNECTED, 'not connected'));
      }
    });
  }

  /** Sends once open (waiting up to the request timeout), then waits for the reply. */
  async _call(frame, kind = 'call', extra = {}) {
    if (this.state === States.CLOSED) throw new RingbearerError(ClientCodes.CLOSED, 'client closed');
    if (this.state !== States.OPEN) await this._waitOpen(this.requestTimeoutMs);
    return this._request(frame, kind, extra);
  }

  _sendPublish(item) {
    const ref = `r${this._nextRef++}`;
    const p = {
      kind: 'publish',
      item,
      timer: null,
      resolve: (f) => item.resolve(f),
      reject: (e) => item.reject(e),
    };
    // The timer stands for "no answer": the connection is presumed dead (a reply never
    // gets lost on a live one), so drop it; the publish is requeued with its key.
    p.timer = setTimeout(() => {
      if (this._ws) this._drop(this._ws, 'no reply to a publish', 0);
    }, this.requestTimeoutMs);
    this._pending.set(ref, p);
    if (!this._send({ ...item.frame, ref })) {
      clearTimeout(p.timer);
      this._pending.delete(ref);
      this._queue(item);
    }
  }

  _queue(item) {
    if (this._outbox.length >= this.outboxMax) {
      item.reject(new RingbearerError(ClientCodes.OUTBOX_FULL, `the offline outbox holds ${this.outboxMax} publishes`));
      return;
    }
    this._outbox.push(item);
  }

  // ---- the API ------------------------------------------------------------------------

  /**
   * Creates a channel (or returns the existing one). Resolves with the `created` reply.
   * @param {{name: string, type?: string, wedding_id?: string, permissions?: object,
   *   members?: string[], max_subscribers?: number, message_retention_hours?: number}} spec
   */
  async create(spec) {
    const f = await this._call({ op: 'create', ...spec });
    return { channelId: f.channel_id, channelName: f.channel_name, createdAt: f.created_at };
  }

  /**
   * Subscribes; resolves with the `subscribed` reply once its messages went out as
   * `message` events (de-duplicated). The client resubscribes it after every reconnect.
   * @param {string} channel
   * @param {{lastSeenId?: number, epoch?: string, includeHistory?: boolean}} [opts]
   */
  async subscribe(channel, opts = {}) {
    const pos = this._tracker.position(channel);
    const frame = { op: 'subscribe', channel };
    const seen = opts.lastSeenId ?? pos.lastSeenId;
    const epoch = opts.epoch ?? pos.epoch;
    if (seen != null) frame.last_seen_id = seen;
    if (epoch) frame.epoch = epoch;
    if (opts.includeHistory) frame.include_history = true;
    const f = await this._call(frame, 'subscribe');
    return {
      channel: f.channel,
      epoch: f.epoch,
      recovered: Boolean(f.recovered),
      messages: f.messages ?? [],
      presence: f.presence ?? [],
      presenceTotal: f.presence_total ?? 0,
    };
  }

  /** Unsubscribes; the channel is no longer resubscribed, its member list is dropped. */
  async unsubscribe(channel) {
    this._tracker.forget(channel);
    this._presence.delete(channel);
    this._presenceTotal.delete(channel);
    await this._call({ op: 'unsubscribe', channel });
  }

  /**
   * Publishes. Resolves with `{id, deliveredCount, queuedCount}` once the server stored
   * it. While disconnected the publish waits in the outbox (at most `outboxMax`, else it
   * is refused with CLIENT_OUTBOX_FULL) and goes out after the next connection's
   * resubscribes. Every publish carries an idempotency key (yours, or a random one), so
   * a publish resent after a lost connection is never stored twice.
   * @param {{channel: string, type: string, payload: any, event?: string, priority?: string,
   *   idempotencyKey?: string, targetUserId?: string, targetRoles?: string[],
   *   weddingContext?: object}} msg
   */
  publish(msg) {
    if (this.state === States.CLOSED) return Promise.reject(new RingbearerError(ClientCodes.CLOSED, 'client closed'));
    const frame = { op: 'publish', channel: msg.channel, type: msg.type ?? 'general', payload: msg.payload ?? null };
    if (msg.event) frame.event = msg.event;
    if (msg.priority) frame.priority = msg.priority;
    if (msg.targetUserId) frame.target_user_id = msg.targetUserId;
    if (msg.targetRoles && msg.targetRoles.length) frame.target_roles = msg.targetRoles;
    if (msg.weddingContext) frame.wedding_context = msg.weddingContext;
    frame.idempotency_key = msg.idempotencyKey ?? randomKey();
    return new Promise((resolve, reject) => {
      const item = {
        frame,
        seq: this._nextRef++,
        resolve: (f) => resolve({ id: f.id, deliveredCount: f.delivered_count, queuedCount: f.queued_count, channel: f.channel }),
        reject,
      };
      if (this.state === States.OPEN && this._outbox.length === 0) this._sendPublish(item);
      else this._queue(item);
    });
  }

  /** Publishes waiting for a connection. */
  get outboxSize() {
    return this._outbox.length;
  }

  /** Acknowledges everything up to `id` on `channel` (cumulative). Fire and forget. */
  ack(channel, id) {
    this._send({ op: 'ack', channel, id });
  }

  /** Sets this connection's presence meta on a subscribed channel. */
  async setPresence(channel, meta) {
    await this._call({ op: 'presence', channel, meta });
  }

  /** Tells the channel's other subscribers this user is typing. */
  typing(channel) {
    this._send({ op: 'typing', channel });
  }

  /** The channel's current members (presence entries), in join order as far as known. */
  members(channel) {
    return [...(this._presence.get(channel)?.values() ?? [])];
  }

  /**
   * Reads a shared-state document (docs/protocol.md "Shared state"): resolves with
   * `{channel, doc, version, value, writer}` (version 0, value and writer null when never
   * written). Needs read access to the channel, no subscription.
   */
  async stateGet(channel, doc) {
    const f = await this._call({ op: 'state_get', channel, doc });
    return { channel: f.channel, doc: f.doc, version: f.version, value: f.value ?? null, writer: f.writer ?? null };
  }

  /**
   * Replaces a document's value (an object), based on `version` (0 to create). Resolves
   * with `{applied: true, version, id, overrode}` once stored, or — a stale write that does
   * not outrank the last writer — `{applied: false, version, value, writer, yourVersion}`
   * (nothing applied: merge, and write again on `version`).
   */
  async stateSet(channel, doc, version, value) {
    return stateWriteResult(await this._call({ op: 'state_set', channel, doc, version, value }));
  }

  /** Replaces the top-level `fields` of a document (`null` removes one), all or none. */
  async statePatch(channel, doc, version, fields) {
    return stateWriteResult(await this._call({ op: 'state_patch', channel, doc, version, fields }));
  }

  /** Round trip to the server. */
  async ping() {
    await this._call({ op: 'ping' });
  }

  /**
   * Sends a fresh token on the open connection (`token` op); with no argument asks
   * `getToken()`. The new token is used for reconnects too.
   * @param {string} [token]
   */
  async refreshToken(token) {
    const t = token ?? (await this._currentToken());
    await this._call({ op: 'token', token: t });
    this._token = t;
  }
}

/** `state_ok` / `state_conflict` as the app sees them. */
function stateWriteResult(f) {
  if (f.op === 'state_ok') return { applied: true, version: f.version, id: f.id, overrode: f.overrode ?? null };
  return { applied: false, version: f.version, value: f.value ?? null, writer: f.writer ?? null, yourVersion: f.your_version };
}

export default RingbearerClient;
