/**
 * The baseline for figure 5c: undici alone, making calls one at a time to the stub with figure 5's
 * pauses between them. After as many untimed calls (the daemon it is set against is warm by then),
 * prints the CPU this process used over the timed ones, user and kernel, in µs a call, as one JSON
 * line. Plain JavaScript, like bare-server.mjs: no TypeScript loader's work counts against it.
 *
 * Usage: node paced-calls.mjs <stub origin> <calls> <pause min ms> <pause max ms>
 */
import { Pool } from 'undici';

const [origin, calls, pauseMin, pauseMax] = process.argv.slice(2).map((arg, i) => (i === 0 ? arg : Number(arg)));
// As many connections as the pickup daemon's WORKER_CONCURRENCY, as the worker's own pool keeps.
const pool = new Pool(origin, { connections: 8 });
const body = JSON.stringify({ model: 'gpt-bench', messages: [{ role: 'user', content: 'paced' }] });

async function paced(count) {
  for (let i = 0; i < count; i++) {
    const res = await pool.request({ method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json', authorization: 'Bearer sk' }, body });
    await res.body.json();
    await new Promise((r) => setTimeout(r, pauseMin + Math.random() * (pauseMax - pauseMin)));
  }
}

await paced(calls);
const before = process.cpuUsage();
await paced(calls);
const used = process.cpuUsage(before);
process.stdout.write(`${JSON.stringify({ cpuUsPerCall: (used.user + used.system) / calls })}\n`);
await pool.close();
