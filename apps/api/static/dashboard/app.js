// The status page: reads /health and /v1/stats with the key kept in session storage, every 5 s.
// Their paths are relative to the page, so that it works where a proxy serves the API under a path
// of its own (/tools/gpt/dashboard/ reads /tools/gpt/health).
'use strict';

const REFRESH_MS = 5000;
// Past a cron worker's minute (proxy-worker once, which is live only while it runs), a job waiting
// with no worker alive waits for nothing: the database answers, but the service does not. The same
// bound as proxy-worker stats' (STALLED_AFTER_SECONDS in packages/core/src/store/types.ts; the
// dashboard's browser test fails if the two part).
const STALLED_AFTER_SECONDS = 120;
const STATUSES = ['queued', 'in_progress', 'completed', 'failed', 'cancelled', 'expired'];
const $ = (id) => document.getElementById(id);
let timer = null;

function key() {
  return sessionStorage.getItem('proxyKey');
}

async function getJson(path) {
  const res = await fetch(path, { headers: { 'X-Proxy-Key': key() }, cache: 'no-store' });
  const body = await res.json().catch(() => ({}));
  return { status: res.status, body };
}

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value === null || value === undefined ? '–' : String(value);
  if (className) el.className = className;
  return el;
}

function fillTable(id, rows, empty) {
  const body = $(id).querySelector('tbody');
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = text('td', empty, 'empty');
    // Across every column: the workers' table has five, the failed jobs' four.
    td.colSpan = $(id).querySelectorAll('thead th').length;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement('tr');
    for (const cell of cells) tr.append(text('td', cell));
    body.append(tr);
  }
}

function drawBars(id, counts, className) {
  const svg = $(id);
  svg.replaceChildren();
  const max = Math.max(1, ...counts);
  const width = 600 / counts.length;
  counts.forEach((n, i) => {
    if (n === 0) return;
    const h = Math.max(2, (n / max) * 110);
    const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
    rect.setAttribute('x', String(i * width + 1));
    rect.setAttribute('y', String(120 - h));
    rect.setAttribute('width', String(Math.max(1, width - 2)));
    rect.setAttribute('height', String(h));
    rect.setAttribute('class', className);
    const title = document.createElementNS('http://www.w3.org/2000/svg', 'title');
    title.textContent = `${n}`;
    rect.append(title);
    svg.append(rect);
  });
}

function perMinute(rows, statuses, nowSeconds) {
  const first = Math.floor(nowSeconds / 60) * 60 - 59 * 60;
  const counts = new Array(60).fill(0);
  for (const row of rows) {
    const slot = Math.round((row.minute - first) / 60);
    if (slot >= 0 && slot < 60 && statuses.includes(row.status)) counts[slot] += row.count;
  }
  return counts;
}

const time = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString() : '–');

async function refresh() {
  try {
    const [health, stats] = await Promise.all([getJson('../health'), getJson('../v1/stats')]);
    if (stats.status === 401) return logout('That key was not accepted.');
    const queue = health.body.queue ?? {};
    const age = health.body.oldest_queued_age_seconds;
    const stalled = (queue.queued ?? 0) > 0 && (health.body.workers ?? []).length === 0 && (age ?? 0) >= STALLED_AFTER_SECONDS;
    // The server's clock places the minutes and the outage: this browser's may be off.
    const now = stats.body.server_time ?? Date.now() / 1000;
    const downSince = health.body.upstream_down_since;
    if (health.body.status !== 'ok') setState(`unavailable: ${health.body.error?.message ?? 'unknown'}`, 'down');
    else if (stalled) setState(`jobs waiting up to ${age} s: no live worker`, 'warn');
    else if (typeof downSince === 'number') {
      const why = health.body.upstream_down_reason ? `, as it ${health.body.upstream_down_reason}` : '';
      setState(
        `the upstream was found down ${Math.max(0, Math.round(now - downSince))} s ago${why}: jobs wait in the queue, and one call at a time looks whether it is back`,
        'warn',
      );
    } else setState('healthy', 'ok');
    $('queue').replaceChildren(
      ...STATUSES.map((s) => {
        const tile = document.createElement('div');
        tile.className = 'tile';
        tile.dataset.status = s;
        tile.append(text('b', queue[s] ?? 0), text('span', s.replace('_', ' ')));
        return tile;
      }),
    );
    $('oldest').textContent = age === null || age === undefined ? 'none' : `${age} s`;
    $('api-clock').textContent = clockText(health.body.clock_offset_ms);
    $('updated').textContent = new Date().toLocaleTimeString();
    drawBars('chart-completed', perMinute(stats.body.per_minute ?? [], ['completed'], now), 'completed');
    drawBars('chart-failed', perMinute(stats.body.per_minute ?? [], ['failed', 'expired'], now), 'failed');
    fillTable(
      'failed',
      (stats.body.latest_failed ?? []).map((j) => [j.id, j.model, time(j.finished_at), j.error ? `${j.error.code}: ${j.error.message}` : '']),
      'no failed jobs',
    );
    fillTable(
      'workers',
      (health.body.workers ?? []).map((w) => [w.id, w.pid, w.jobs_done, time(w.last_seen_at), clockText(w.clock_offset_ms)]),
      'no live worker',
    );
  } catch (err) {
    setState('cannot reach the API', 'down');
  }
}

function setState(words, kind) {
  $('state').textContent = words;
  $('state').className = kind ? `state ${kind}` : 'state';
}

/** A host's clock against the store's: a worker's as its heartbeat reported it, the API's as it measures it (the store's minus the host's, ms). */
function clockText(offsetMs) {
  if (offsetMs === null || offsetMs === undefined) return 'not reported';
  if (offsetMs === 0) return 'in step';
  const size = Math.abs(offsetMs) < 1000 ? `${Math.abs(offsetMs)} ms` : `${(Math.abs(offsetMs) / 1000).toFixed(1)} s`;
  return `${size} ${offsetMs > 0 ? 'behind' : 'ahead'}`;
}

function show() {
  $('login').hidden = true;
  $('board').hidden = false;
  $('forget').hidden = false;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function logout(message) {
  sessionStorage.removeItem('proxyKey');
  clearInterval(timer);
  $('board').hidden = true;
  $('forget').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  setState('not connected');
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem('proxyKey', $('key').value.trim());
  $('key').value = '';
  show();
});
$('forget').addEventListener('click', () => logout());
if (key()) show();
