import { attemptBumps, labelsJson, tokenBumps } from '../counter-labels.js';
import type { AttemptObservation, TokenCounts } from '../types.js';
import type { Db } from './open-database.js';

/**
 * Adds to named counters. Writes gather their bumps in memory and the write queue upserts them
 * once per transaction (`writePending`, just before the commit), so a batch of a hundred creates
 * costs one counter write instead of a hundred, and the counts stay as durable as the jobs.
 */
export function createCounters(db: Db) {
  const upsert = db.prepare<[string, string, number]>(
    'INSERT INTO counters (name, labels, value) VALUES (?, ?, ?) ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value',
  );
  const all = db.prepare<[], { name: string; labels: string; value: number }>('SELECT name, labels, value FROM counters ORDER BY name, labels');
  /** name → labels as JSON → amount not yet written. */
  const pending = new Map<string, Map<string, number>>();
  const addJson = (name: string, json: string, by: number) => {
    let byLabels = pending.get(name);
    if (!byLabels) pending.set(name, (byLabels = new Map()));
    byLabels.set(json, (byLabels.get(json) ?? 0) + by);
  };
  return {
    add(name: string, labels: Record<string, string>, by = 1) {
      addJson(name, labelsJson(labels), by);
    },
    /** One upstream attempt: the counters attemptBumps names, as the PostgreSQL store moves them. */
    observeAttempt(attempt: AttemptObservation) {
      for (const [name, json, by] of attemptBumps(attempt)) addJson(name, json, by);
    },
    /** A completion's tokens, under its job's model label (tokenBumps, as the PostgreSQL store counts them). */
    observeTokens(tokens: TokenCounts, modelLabel: string) {
      for (const [name, json, by] of tokenBumps(tokens, modelLabel)) addJson(name, json, by);
    },
    /** Inside the transaction whose writes added them. */
    writePending() {
      for (const [name, byLabels] of pending) for (const [labels, by] of byLabels) upsert.run(name, labels, by);
      pending.clear();
    },
    /** The transaction rolled back: its bumps never happened. */
    discardPending() {
      pending.clear();
    },
    read() {
      return all.all().map((r) => ({ name: r.name, labels: JSON.parse(r.labels) as Record<string, string>, value: r.value }));
    },
  };
}
