import { performance } from 'node:perf_hooks';
import { errors as undiciErrors, type buildConnector } from 'undici';

/**
 * How long after a call was sent its connection may drop, unanswered, for the drop to be taken
 * for the upstream closing that connection while it was idle. Such a close crosses the call on
 * the wire and comes back within a round trip. A drop later than this may follow a call the
 * upstream read and worked on (a balancer cutting a long wait, say): sent again at once, it
 * would be paid for twice within one attempt.
 */
export const IDLE_CLOSE_WINDOW_MS = 1000;

/**
 * Tells a call that met a connection the upstream closed while it sat idle in the pool.
 *
 * The upstream may close an idle connection (after its own idle limit, 5 s in uvicorn, 2 s in
 * gunicorn) at the moment a call is written to it. The call fails, never read, as "other side
 * closed", and was retried with an attempt spent. Measured: calls spaced at a server's idle limit
 * (± 3 ms, across two processes on loopback) failed this way 10 times in 400. curl and browsers
 * send such a call once more on a new connection; so does the upstream client, told by this.
 *
 * undici does not say which connection a call went on. Its error names the socket's local address
 * and port, and each connection's is noted here as it is made: a connection made before the call
 * began had been open, and idle, when the call took it.
 *
 * A close that finds the call already in the upstream's buffer is a reset (TCP RST), not an end:
 * the socket's read or write fails with ECONNRESET or EPIPE, which undici passes on as it is, with
 * no address in it. Each socket's own errors are noted as it emits them, so such an error names
 * its connection all the same.
 */
export interface IdleCloseTracker {
  /** Wraps a connector so that each connection it makes is noted as it is made. */
  track(connect: buildConnector.connector): buildConnector.connector;
  /** Whether `err`, from a call sent at `sentAt` (performance.now()), is such a close. */
  closedWhileIdle(err: unknown, sentAt: number): boolean;
}

// What a socket's read or write meets when the other side has reset the connection.
const PEER_CLOSED = new Set(['ECONNRESET', 'EPIPE']);

/** One tracker per pool: it holds the open connections' addresses, so it forgets each as it closes. */
export function createIdleCloseTracker(now: () => number = () => performance.now()): IdleCloseTracker {
  const madeAt = new Map<string, number>();
  // A socket's error, as it emitted it, to when that socket was made. Weak: an error lives as
  // long as the call that met it.
  const erredOn = new WeakMap<object, number>();
  const key = (address: string | undefined, port: number | undefined) => (address && port ? `${address}|${port}` : null);

  return {
    track(connect) {
      return (options, callback) =>
        connect(options, (...args) => {
          const socket = args[1];
          // Every socket met here has one, TLS inside a proxy's TLS included; one without is left
          // untracked, and its calls are not sent again.
          const at = socket ? key(socket.localAddress, socket.localPort) : null;
          if (socket && at) {
            const made = now();
            madeAt.set(at, made);
            // After the close's own callbacks: undici fails the call on that socket from its
            // 'close', and the call asks closedWhileIdle in a microtask after it. A new connection
            // given the same port meanwhile keeps its own entry.
            // Before undici's own listener, which hands the error to the call.
            socket.prependListener('error', (err) => {
              if (PEER_CLOSED.has((err as NodeJS.ErrnoException).code ?? '')) erredOn.set(err, made);
            });
            socket.once('close', () =>
              setImmediate(() => {
                if (madeAt.get(at) === made) madeAt.delete(at);
              }),
            );
          }
          callback(...args);
        });
    },
    closedWhileIdle(err, sentAt) {
      if (typeof err !== 'object' || err === null || now() - sentAt > IDLE_CLOSE_WINDOW_MS) return false;
      let made = erredOn.get(err);
      if (made === undefined && err instanceof undiciErrors.SocketError) {
        const at = key(err.socket?.localAddress, err.socket?.localPort);
        made = at ? madeAt.get(at) : undefined;
      }
      return made !== undefined && made < sentAt;
    },
  };
}
