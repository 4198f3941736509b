import pg from 'pg';

/**
 * How long the listening connection stays open after the change counter was last read. Listening
 * costs the process a wakeup for every commit to the jobs on the whole server, wanted or not:
 * measured (profile.ts longpoll), an API nobody long-polled used 5% of a core while a worker drained
 * 1,000 jobs a second. An idle worker daemon subscribes while it sleeps (JobStore.watchChanges) and
 * reads the counter when it wakes, so it always listens; an API listens only while long-polls wait,
 * and for this long after.
 */
export const LISTEN_IDLE_MS = 30_000;

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
  /** How often the counter moves anyway, in case a notification was lost (ms). */
  fallbackPollMs: number;
  idleMs?: number;
}

/**
 * LISTENs for `proxy_jobs` (sent by the jobs table's triggers when a job is queued or finishes) on a
 * connection of its own, opened when the counter is first read or someone subscribes, and closed when
 * nobody is subscribed and the counter has not been read for `idleMs`. The
 * counter moves once more when a connection starts listening: commits made before LISTEN took
 * effect sent nobody a notification, so whoever reads the counter looks once more.
 */
export function createChangeListener(options: ChangeListenerOptions): ChangeListener {
  const idleMs = options.idleMs ?? LISTEN_IDLE_MS;
  let changes = 0;
  const subscribers = new Set<() => void>();
  const changed = () => {
    changes += 1;
    for (const onChange of subscribers) onChange();
  };
  let closed = false;
  let lastRead = 0;
  // The connection listening, or being opened to listen.
  let client: pg.Client | null = null;
  // After a connection was lost, none is opened before this (performance.now()).
  let retryAfter = 0;

  async function listen(): Promise<void> {
    const own = new pg.Client({ ...options.connection, application_name: `proxy-listener:${options.schema}`, keepAlive: true });
    client = own;
    // A dropped connection: the fallback poll covers the gap, and the next read (after a second, so a
    // server that is down is not asked in a loop) opens another.
    const lost = () => {
      changed();
      if (client === own) {
        client = null;
        retryAfter = performance.now() + 1000;
      }
      own.end().catch(() => undefined);
    };
    // Every schema's jobs notify on one channel, naming their schema (migration 0009; before it, no
    // payload): another schema's jobs are not this store's business.
    own.on('notification', (msg) => {
      if (!msg.payload || msg.payload === options.schema) changed();
    });
    own.on('error', lost);
    try {
      await own.connect();
      await own.query('LISTEN proxy_jobs');
      changed();
    } catch {
      lost();
    }
  }

  /** Opens a listening connection if none is open, unless a lost one was given up on under a second ago. */
  function ensureListening(at: number): void {
    if (!client && !closed && at >= retryAfter) void listen();
  }

  const fallback = setInterval(() => {
    changes += 1;
    if (client && subscribers.size === 0 && performance.now() - lastRead > idleMs) {
      const idle = client;
      client = null;
      idle.removeAllListeners('notification');
      idle.end().catch(() => undefined);
    }
  }, options.fallbackPollMs);
  fallback.unref();

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
      clearInterval(fallback);
      const last = client;
      client = null;
      await last?.end().catch(() => undefined);
    },
  };
}
