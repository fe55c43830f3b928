// Types of @ringbearer/client (ringbearer.js). Hand-written; keep in step with the module.

/** Most server URLs one client accepts. */
export const MAX_URLS: 16;
/** The server list of the options (`urls`, or `[url]`); throws a TypeError when invalid. */
export function serverUrls(options: { url?: string; urls?: string[] }): string[];

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
export type Priority = 'low' | 'normal' | 'high' | 'critical' | 'emergency';

export interface BackoffOptions {
  /** Ceiling of the first reconnect delay, ms. Default 100. */
  initialMs?: number;
  /** No delay is longer than this, ms; also how long a connection must stay up to reset the attempt count. Default 5000. */
  maxMs?: number;
  /** Growth of the ceiling per attempt (>= 1). Default 2. */
  multiplier?: number;
  /** Full jitter (uniform in [0, ceiling]). Default true; false only for tests. */
  jitter?: boolean;
}

export interface ClientOptions {
  /** ws:// or wss:// URL of the server's /ws. Give this or `urls`. */
  url?: string;
  /**
   * Several servers (at most MAX_URLS, no repeats), tried in this order: on every failed
   * attempt or lost connection the client moves to the next one (round robin); each round
   * of the list starts with one backoff delay. They must accept the same tokens and share
   * the channels' logs for a move to resume without gaps. Give this or `url`.
   */
  urls?: string[];
  /** With `urls`: start at a random server instead of the first. Default false. */
  randomStart?: boolean;
  /** A fixed token. Give this or getToken. */
  token?: string;
  /** Asked before every (re)connect and on token_expiring. */
  getToken?: () => string | Promise<string>;
  /** A WebSocket constructor (the browser's by default; in Node 20 the `ws` package's). */
  WebSocket?: any;
  backoff?: BackoffOptions;
  /** How long a call waits for its reply (and for a connection). Default 10000 ms. */
  requestTimeoutMs?: number;
  /** App-level ping period to find dead connections; 0 disables. Default 25000 ms. */
  pingIntervalMs?: number;
  /** Acknowledge every delivered message automatically (coalesced). Default true. */
  autoAck?: boolean;
  /** Publishes kept while disconnected. Default 100. */
  outboxMax?: number;
  /** How the token travels: Sec-WebSocket-Protocol (default) or ?token=. */
  tokenTransport?: 'protocol' | 'query';
  /** Random source in [0, 1) for the jitter. Default Math.random. */
  random?: () => number;
}

export interface PresenceEntry {
  user_id: string;
  connection_id: string;
  role: string;
  meta: Record<string, unknown>;
}

export interface Message {
  op: 'message';
  channel: string;
  id: number;
  type: string;
  event?: string;
  priority?: Priority;
  payload: unknown;
  sender: { user_id: string; role: string };
  ts: number;
  target_user_id?: string;
  wedding_context?: WeddingContext;
  idempotency_key?: string;
}

export interface WeddingContext {
  wedding_id: string;
  event_date?: string;
  vendor_type?: string;
  requires_immediate_action?: boolean;
}

export interface CreateSpec {
  name: string;
  type?: 'private' | 'shared' | 'broadcast';
  wedding_id?: string;
  permissions?: { read?: string[]; write?: string[]; admin?: string[] };
  members?: string[];
  max_subscribers?: number;
  message_retention_hours?: number;
}

export interface Created { channelId: string; channelName: string; createdAt: string }

export interface SubscribeOptions { lastSeenId?: number; epoch?: string; includeHistory?: boolean }

export interface Subscribed {
  channel: string;
  epoch: string;
  recovered: boolean;
  messages: Message[];
  presence: PresenceEntry[];
  presenceTotal: number;
}

export interface PublishSpec {
  channel: string;
  type: string;
  payload: unknown;
  event?: string;
  priority?: Priority;
  /** Given or generated; a resend with the same key is never stored twice. */
  idempotencyKey?: string;
  targetUserId?: string;
  weddingContext?: WeddingContext;
}

export interface Published { id: number; deliveredCount: number; queuedCount: number; channel: string }

export interface StateEvent {
  state: ConnectionState;
  /** On open: whether it followed a loss. */
  reconnect?: boolean;
  /** On reconnecting/closed: why. */
  reason?: string;
  /** On reconnecting: the WebSocket close code (0 when none). */
  code?: number;
  /** On reconnecting: the backoff round (1 = the first after the loss). */
  attempt?: number;
  /** On reconnecting: the wait before the next attempt (0 within a round of the list). */
  delayMs?: number;
  /** On connecting/open: the server; on reconnecting: the server that failed or was lost. */
  url?: string;
  /** On reconnecting: the server the next attempt goes to. */
  nextUrl?: string;
}

export interface PresenceEvent { channel: string; members: PresenceEntry[]; total: number }
export interface TypingEvent { channel: string; userId: string; role: string }

export interface EventMap {
  state: StateEvent;
  message: Message;
  presence: PresenceEvent;
  typing: TypingEvent;
  resubscribed: { channel: string; recovered: boolean };
  token_expiring: { expiresAt: number };
  /** Another user's stale write outranked this user's version of a shared-state document. */
  state_overridden: { channel: string; doc: string; version: number; yourVersion: number; by: StateWriter };
  error: RingbearerError | Error;
}

export interface StateWriter {
  user_id: string;
  org: string;
  role: string;
}

export interface StateDoc {
  channel: string;
  doc: string;
  /** 0 for a document never written. */
  version: number;
  value: Record<string, unknown> | null;
  writer: StateWriter | null;
}

export type StateWriteResult =
  | { applied: true; version: number; id: number; overrode: (StateWriter & { version: number }) | null }
  | { applied: false; version: number; value: Record<string, unknown> | null; writer: StateWriter | null; yourVersion: number };

export declare const ClientCodes: {
  readonly NOT_CONNECTED: 'CLIENT_NOT_CONNECTED';
  readonly DISCONNECTED: 'CLIENT_DISCONNECTED';
  readonly TIMEOUT: 'CLIENT_TIMEOUT';
  readonly CLOSED: 'CLIENT_CLOSED';
  readonly OUTBOX_FULL: 'CLIENT_OUTBOX_FULL';
  readonly PROTOCOL: 'CLIENT_PROTOCOL';
};

export declare const States: {
  readonly IDLE: 'idle';
  readonly CONNECTING: 'connecting';
  readonly OPEN: 'open';
  readonly RECONNECTING: 'reconnecting';
  readonly CLOSED: 'closed';
};

export declare class RingbearerError extends Error {
  constructor(code: string, message: string, extra?: { retryable?: boolean; retryAfter?: number | null; ref?: string | null });
  /** `WS_*` from the server (docs/protocol.md "Errors") or `CLIENT_*`. */
  readonly code: string;
  readonly serverMessage: string;
  readonly retryable: boolean;
  /** Seconds, from the server's retry_after (WS_RATE_LIMITED). */
  readonly retryAfter: number | null;
  readonly ref: string | null;
  static fromFrame(frame: unknown): RingbearerError;
}

export declare class RingbearerClient {
  constructor(options: ClientOptions);
  /** The server of the current (or last, or next) connection. */
  readonly url: string;
  /** Every server, in order. */
  readonly urls: string[];
  readonly state: ConnectionState;
  readonly outboxSize: number;
  on<K extends keyof EventMap>(type: K, fn: (ev: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(type: K, fn: (ev: EventMap[K]) => void): void;
  connect(): Promise<void>;
  close(reason?: string): void;
  create(spec: CreateSpec): Promise<Created>;
  subscribe(channel: string, opts?: SubscribeOptions): Promise<Subscribed>;
  unsubscribe(channel: string): Promise<void>;
  publish(msg: PublishSpec): Promise<Published>;
  ack(channel: string, id: number): void;
  setPresence(channel: string, meta: Record<string, unknown>): Promise<void>;
  typing(channel: string): void;
  members(channel: string): PresenceEntry[];
  stateGet(channel: string, doc: string): Promise<StateDoc>;
  stateSet(channel: string, doc: string, version: number, value: Record<string, unknown>): Promise<StateWriteResult>;
  statePatch(channel: string, doc: string, version: number, fields: Record<string, unknown>): Promise<StateWriteResult>;
  ping(): Promise<void>;
  refreshToken(token?: string): Promise<void>;
}

export declare function backoffDelay(attempt: number, opts?: BackoffOptions, random?: () => number): number;

export declare class DedupTracker {
  onSubscribed(channel: string, epoch: string): void;
  accept(channel: string, id: number, priority?: Priority): boolean;
  position(channel: string): { lastSeenId: number | null; epoch: string | null };
  forget(channel: string): void;
  list(): string[];
}

export declare function applyPresence(members: Map<string, PresenceEntry>, frame: unknown): Map<string, PresenceEntry>;

export default RingbearerClient;
