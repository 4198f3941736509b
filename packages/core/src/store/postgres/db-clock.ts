/**
 * The PostgreSQL server's clock, kept by each host as an offset from its own.
 *
 * Every time the store writes or compares (a lease's end, a retry's `run_after`, a deadline, a
 * heartbeat, a rate budget) comes from the process that asks, and on PostgreSQL those processes
 * run on several hosts. Read off each host's clock, a worker whose clock runs 20 s ahead sees the
 * other workers' leases (30 s, renewed every 10) lapse and takes their jobs while their calls run,
 * and an API whose clock runs 30 s ahead finds every worker's heartbeat too old (a test runs hosts
 * a minute and ten minutes ahead under libfaketime). Read off the server's, the hosts agree
 * whatever their clocks say. The offset is measured, not asked for on every statement:
 * reading the time stays a local call on the hot path, and no statement changes.
 *
 * Between two measurements the server's time is carried forward by this host's clock and by its
 * monotonic clock both, and the later of the two readings counts. By the host's clock alone, one
 * stepped back (by hand, by NTP at boot) took the server's time back with it until the next
 * measurement, up to a minute, and a worker's lease renewed meanwhile ended that much too soon for
 * the other hosts, which could take its job while the call ran. By the monotonic clock alone, a host
 * suspended (a laptop asleep, a VM saved and restored; the monotonic clock stops meanwhile) would
 * read the server's time behind by as long, with the same result. A clock stepped forward reads
 * ahead until the next measurement, as it did before.
 */

/** How often the offset is measured again (a host's clock stepped or drifting by NTP). */
export const CLOCK_SYNC_MS = 60_000;
/** Readings a measurement takes; the quickest round trip gives the truest midpoint. */
const SAMPLES = 3;
/** An offset this large, or a change this large since the last report, is reported (it means NTP is off). */
export const CLOCK_REPORT_MS = 1000;

export interface DbClock {
  /** The server's time now, in Unix ms (a whole number: BIGINT columns take it). */
  now(): number;
  /** The server's clock minus this host's, as last measured (ms): what is reported, not how the time is read. */
  readonly offsetMs: number;
  /** Stops the periodic measurement. */
  close(): void;
}

/**
 * Measures the server's clock against `localNow` (`readServerMs` returns the server's time, read
 * inside one statement), then again every CLOCK_SYNC_MS. A failed measurement keeps the last
 * offset, and so does one that differs from it by no more than half its round trip. `report` is
 * told the offset at start when it is CLOCK_REPORT_MS or more, and after whenever it moved by that
 * much.
 */
export async function createDbClock(
  readServerMs: () => Promise<number>,
  localNow: () => number = Date.now,
  report?: (offsetMs: number) => void,
  monotonic: () => number = () => performance.now(),
): Promise<DbClock> {
  // `base`: the server's time less the monotonic clock's reading, which now() adds back.
  const measure = async (): Promise<{ offset: number; base: number; rtt: number }> => {
    let best = { rtt: Infinity, offset: 0, base: 0 };
    for (let i = 0; i < SAMPLES; i++) {
      const [sent, sentMono] = [localNow(), monotonic()];
      const server = await readServerMs();
      const [received, receivedMono] = [localNow(), monotonic()];
      // The server read its clock somewhere in the round trip: its middle is the best guess, off by
      // at most half of it.
      const rtt = receivedMono - sentMono;
      if (rtt < best.rtt) best = { rtt, offset: server - (sent + received) / 2, base: server - (sentMono + receivedMono) / 2 };
    }
    return { offset: Math.round(best.offset), base: best.base, rtt: best.rtt };
  };
  const first = await measure();
  let offset = first.offset;
  let base = first.base;
  let reported = 0;
  if (Math.abs(offset) >= CLOCK_REPORT_MS) {
    reported = offset;
    report?.(offset);
  }
  const timer = setInterval(() => {
    measure().then(
      (measured) => {
        // A difference its own round trip could explain (a busy pool or server) is no news: the
        // offset stays, and the time read does not jitter back and forth each minute. Each of the
        // two moves apart: a host suspended moves the base, a host's clock stepped the offset, and
        // the server's own clock stepped both.
        if (Math.abs(measured.base - base) > measured.rtt / 2) base = measured.base;
        if (Math.abs(measured.offset - offset) <= measured.rtt / 2) return;
        offset = measured.offset;
        if (Math.abs(offset - reported) >= CLOCK_REPORT_MS) {
          reported = offset;
          report?.(offset);
        }
      },
      () => undefined,
    );
  }, CLOCK_SYNC_MS);
  timer.unref();
  return {
    now: () => Math.max(localNow() + offset, Math.round(monotonic() + base)),
    get offsetMs() {
      return offset;
    },
    close: () => clearInterval(timer),
  };
}
