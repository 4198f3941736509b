/**
 * The soak's upstream, in a process of its own (started by soak.ts with `fork`). It stamps each
 * call's arrival, and the soak's spacing check reads those stamps: on the soak's own event loop,
 * busy with hundreds of clients, a stall held them back by up to 186 ms (measured in a 20-minute
 * run), more than the check's allowance. Here the loop does nothing but answer calls.
 *
 * The upstream's day: most calls answered after 0–400 ms, one in twenty failing in one of four ways
 * (no 429s with SOAK_LIMITS: those calls are answered); with SOAK_STREAM, a few streams cut or
 * answered unstreamed. Talks to the soak over the IPC channel: `{ ask: 'count' }` is answered with
 * the calls so far and the longest stall since the last count; `{ ask: 'report' }` with every
 * arrival's stamp and every stall. Exits when the soak closes the channel (or dies).
 */
import { echoCompletion, startStubUpstream, type StubReply } from '../stub-upstream.ts';

const STREAM = process.env.SOAK_STREAM === 'true';
const LIMITS = process.env.SOAK_LIMITS === 'true';

/** A stall of this process's event loop over 30 ms: when it ended (ms since the epoch), how long. */
export type Stall = { endedAt: number; ms: number };
/** The answer to `{ ask: 'count' }`. */
export type UpstreamCount = { calls: number; longestStallMs: number };
/** The answer to `{ ask: 'report' }`. */
export type UpstreamReport = { arrivals: number[]; stalls: Stall[] };
export type SoakUpstreamMessage = { url: string } | UpstreamCount | UpstreamReport;
/** What the soak asks: `{ ask: 'count' }` or `{ ask: 'report' }`. */
export type UpstreamAsk = { ask: 'count' | 'report' };

function upstreamDay(): StubReply | null {
  const roll = Math.random();
  if (roll < 0.03) return { status: 500, body: { error: { message: 'server error', type: 'server_error' } } };
  if (roll < 0.04 && !LIMITS) return { status: 429, headers: { 'retry-after': '1' }, body: { error: { message: 'rate limited', type: 'requests' } } };
  if (roll >= 0.04 && roll < 0.045) return { hang: true };
  if (roll >= 0.045 && roll < 0.05) return { reset: 'rst' };
  if (!STREAM) return null;
  // Streamed: one stream in a hundred cut after its second event, two in a hundred answered whole.
  if (roll >= 0.05 && roll < 0.06) return { cutAfter: 2 };
  if (roll >= 0.06 && roll < 0.08) return { unstreamed: true };
  return { eventGapMs: Math.floor(Math.random() * 20) };
}

// Stalls over 30 ms of this loop, with when they ended: one that ended as a call arrived may have
// held its stamp back by up to its length.
const stalls: Stall[] = [];
let lastBeat = performance.now();
const stallWatch = setInterval(() => {
  const beat = performance.now();
  const late = beat - lastBeat - 10;
  if (late > 30) stalls.push({ endedAt: Date.now(), ms: late });
  lastBeat = beat;
}, 10);
let stallsCounted = 0;

const stub = await startStubUpstream({ behave: (call) => ({ delayMs: Math.floor(Math.random() * 400), body: echoCompletion(call), ...upstreamDay() }) });
const send = (message: SoakUpstreamMessage) => process.send?.(message);

process.on('message', (message: UpstreamAsk) => {
  if (message.ask === 'count') {
    const longestStallMs = stalls.slice(stallsCounted).reduce((most, s) => Math.max(most, s.ms), 0);
    stallsCounted = stalls.length;
    send({ calls: stub.calls.length, longestStallMs });
  } else {
    send({ arrivals: stub.calls.map((call) => call.at), stalls });
  }
});
process.on('disconnect', () => {
  clearInterval(stallWatch);
  void stub.close().then(() => process.exit(0));
});
send({ url: stub.url });
