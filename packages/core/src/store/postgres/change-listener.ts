import type pg from 'pg';
import { PgClient } from './pg-client.js';

/**
 * How long the listening connection stays open after the change counter was last read. Listening
 * costs the process a wakeup for every commit to the jobs on the whole server, wanted or not:
 * measured (profile.ts longpoll), an API nobody long-polled used 5% of a core while a worker drained
 * 1,000 jobs a second. An idle worker daemon subscribes while it sleeps (JobStore.watchChanges) and
 * reads the counter when it wakes, so it always listens; an API listens only while long-polls wait,
 * and for this long after.
 */
export const LISTEN_IDLE_MS = 30_000;

/**
 * How often the listening connection is asked `SELECT 1`, and how long its answer may take before
 * the connection counts as lost. A connection that dies without an error (a NAT or firewall that
 * forgets an idle connection, a server host that vanished) would otherwise keep the process waiting
 * for notifications that never come until TCP gives up, hours later. An answered ping also proves
 * that every notification committed before it was delivered: a backend sends those before it
 * answers a query.
 */
export const LISTEN_PING_MS = 1000;
export const LISTEN_PING_TIMEOUT_MS = 5000;

/**
 * How often the counter moves anyway, for a notification lost all the same. Each move makes an
 * idle worker daemon claim (a transaction), so this is a safety net, not the way jobs are found:
 * at once a second, before the ping, an idle daemon on PostgreSQL claimed once a second.
 */
export const LISTEN_FALLBACK_MS = 10_000;

export interface ChangeListener {
  /**
   * A number that moves when a job of this schema is queued or finishes, on any host (and once a
   * `fallbackPollMs` regardless).
   */
  counter(): number;
  /**
   * Calls `onChange` whenever the counter moves for a notification or a new connection (not the
   * fallback), and keeps a connection listening while anyone is subscribed.
   */
  subscribe(onChange: () => void): () => void;
  close(): Promise<void>;
}

export interface ChangeListenerOptions {
  /** pg.Client settings for the listening connection. */
  connection: pg.ClientConfig;
  schema: string;
  /** How often the counter moves anyway, in case a notification was lost all the same (ms). */
  fallbackPollMs: number;
  idleMs?: number;
  /** LISTEN_PING_MS and LISTEN_PING_TIMEOUT_MS unless given (tests shorten them). */
  pingMs?: number;
  pingTimeoutMs?: number;
}

/** One listening connection: pinged while it listens, ended when lost or no longer wanted. */
interface Listening {
  ping(at: number): void;
  end(): Promise<void>;
}

/**
 * LISTENs for `proxy_jobs` (sent by the jobs table's triggers when a job is queued or finishes) on a
 * connection of its own, opened when the counter is first read or someone subscribes, and closed when
 * nobody is subscribed and the counter has not been read for `idleMs`. The
 * counter moves once more when a connection starts listening: commits made before LISTEN took
 * effect sent nobody a notification, so whoever reads the counter looks once more. It moves too
 * when the connection is lost (an error, or a ping unanswered for `pingTimeoutMs`).
 */
export function createChangeListener(options: ChangeListenerOptions): ChangeListener {
  const idleMs = options.idleMs ?? LISTEN_IDLE_MS;
  const pingTimeoutMs = options.pingTimeoutMs ?? LISTEN_PING_TIMEOUT_MS;
  let changes = 0;
  const subscribers = new Set<() => void>();
  const changed = () => {
    changes += 1;
    for (const onChange of subscribers) onChange();
  };
  let closed = false;
  let lastRead = 0;
  // The connection listening, or being opened to listen.
  let current: Listening | null = null;
  // After a connection was lost, none is opened before this (performance.now()).
  let retryAfter = 0;

  function listen(): void {
    const own = new PgClient({ ...options.connection, application_name: `proxy-listener:${options.schema}`, keepAlive: true });
    let ended = false;
    // When the connection began to open, then when the ping under way was sent (performance.now()),
    // or null while none is: a server that never answers is given up on either way.
    let waitingSince: number | null = performance.now();
    const end = () => {
      ended = true;
      own.removeAllListeners('notification');
      return own.end().catch(() => undefined);
    };
    // A dropped connection: the counter moves, so readers look once, and the next read or tick
    // (after a second, so a server that is down is not asked in a loop) opens another.
    const lost = () => {
      if (ended) return;
      void end();
      changed();
      if (current === self) {
        current = null;
        retryAfter = performance.now() + 1000;
      }
    };
    const self: Listening = {
      ping(at) {
        if (ended) return;
        if (waitingSince !== null) {
          if (at - waitingSince > pingTimeoutMs) lost();
          return;
        }
        waitingSince = at;
        own.query('SELECT 1').then(() => void (waitingSince = null), lost);
      },
      end,
    };
    current = self;
    // Every schema's jobs notify on one channel, naming their schema (migration 0009; before it, no
    // payload): another schema's jobs are not this store's business.
    own.on('notification', (msg) => {
      if (!msg.payload || msg.payload === options.schema) changed();
    });
    own.on('error', lost);
    own
      .connect()
      .then(() => own.query('LISTEN proxy_jobs'))
      .then(() => {
        if (ended) return;
        waitingSince = null;
        changed();
      }, lost);
  }

  /** Opens a listening connection if none is open, unless a lost one was given up on under a second ago. */
  function ensureListening(at: number): void {
    if (!current && !closed && at >= retryAfter) listen();
  }

  let lastFallback = performance.now();
  const tick = setInterval(() => {
    const at = performance.now();
    if (at - lastFallback >= options.fallbackPollMs) {
      lastFallback = at;
      changes += 1;
    }
    if (current && subscribers.size === 0 && at - lastRead > idleMs) {
      void current.end();
      current = null;
      return;
    }
    if (subscribers.size > 0) ensureListening(at);
    current?.ping(at);
  }, options.pingMs ?? LISTEN_PING_MS);
  tick.unref();

  return {
    counter() {
      lastRead = performance.now();
      ensureListening(lastRead);
      return changes;
    },
    subscribe(onChange) {
      subscribers.add(onChange);
      // Listening from now on, and for as long as anyone is subscribed, read or not.
      ensureListening(performance.now());
      return () => void subscribers.delete(onChange);
    },
    async close() {
      closed = true;
      subscribers.clear();
      clearInterval(tick);
      const last = current;
      current = null;
      await last?.end();
    },
  };
}
