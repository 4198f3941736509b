/**
 * The store's hot writes on PostgreSQL: creates, rate-limit draws, and an attempt's endings and
 * retries. Those made in one event-loop turn go as one statement (turn-batch.ts), sharing its round
 * trip, transaction and WAL flush; a lone call is a batch of one.
 */
import type pg from 'pg';
import type { JobRow } from '../job-row.js';
import type { NewJob, RateCheck, RateDecision, TokenCounts } from '../types.js';
import { MODEL_LABELS_MAX, type Bump } from '../counter-labels.js';
import { createTurnBatch } from './turn-batch.js';
import { wellFormed } from '../../unicode.js';

/** What a statement runs on: a transaction's connection, or the store's `db` (any pooled one, retried as checkout.ts says). */
export type Queryable = { query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> };

/**
 * PostgreSQL's text cannot hold the NUL character, which an upstream's answer or error message may
 * carry (SQLite stores it): written as U+FFFD instead, so the job is recorded rather than its write
 * refused and the call made again after the lease lapses; so is half of a UTF-16 pair, as on SQLite
 * (the driver would have written one all the same). JSON columns are unaffected (the escape).
 */
export function pgText(value: string): string;
export function pgText(value: string | null | undefined): string | null;
export function pgText(value: string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  return wellFormed(value.includes('\0') ? value.replaceAll('\0', '\uFFFD') : value);
}

/** A batch's attempt bumps as four parallel arrays (job id, name, labels, value), for unnest. */
function bumpArrays(items: ReadonlyArray<{ id: string; bumps: Bump[] }>): [string[], string[], string[], number[]] {
  const owned = items.flatMap((item) => item.bumps.map((bump) => [item.id, ...bump] as const));
  return [owned.map(([id]) => id), owned.map(([, name]) => name), owned.map(([, , labels]) => labels), owned.map(([, , , by]) => by)];
}

/** The four batched writes, over `db`. */
export function createBatchedWrites(db: Queryable) {
  type Insert = { job: NewJob; at: number };
  const inserts = createTurnBatch<Insert, boolean>(async (items) => {
    // One statement: the jobs, their models admitted to the counters' labels while there is room
    // (counter-labels.ts), and one counter row per label for those the insert created. A (client,
    // nonce) taken before, or earlier in the same batch, is skipped, as alone. The statement reads
    // counter_models as it was before it began, so a model admitted here is known by `admitted`;
    // one admitted meanwhile by another statement is returned by the conflict's update.
    const { rows } = await db.query<{ id: string }>(
      `WITH input AS (
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bigint[], $9::bigint[])
             AS v(id, client, nonce, request_hash, model, request, max_attempts, expires_at, at)),
         inserted AS (
           INSERT INTO jobs (id, client, nonce, request_hash, status, model, request, attempts, max_attempts,
                             run_after, expires_at, created_at, updated_at)
           SELECT id, client, nonce, request_hash, 'queued', model, request, 0, max_attempts, at, expires_at, at, at FROM input
           ON CONFLICT (client, nonce) DO NOTHING
           RETURNING id, model),
         models AS (SELECT model, COUNT(*) AS n FROM inserted GROUP BY model),
         admitted AS (
           INSERT INTO counter_models (model)
           SELECT model FROM models
            WHERE NOT EXISTS (SELECT 1 FROM counter_models known WHERE known.model = models.model)
            ORDER BY model
            LIMIT greatest(0, $10 - (SELECT COUNT(*) FROM (SELECT 1 FROM counter_models LIMIT $10) AS taken))
           ON CONFLICT (model) DO UPDATE SET model = excluded.model
           RETURNING model),
         counted AS (
           INSERT INTO counter_deltas (name, labels, value)
           SELECT 'jobs_created_total',
                  '{"model":' || to_json(CASE WHEN m.model IN (SELECT model FROM admitted) OR EXISTS (SELECT 1 FROM counter_models known WHERE known.model = m.model) THEN m.model ELSE '(other)' END)::text || '}',
                  SUM(m.n)
             FROM models m GROUP BY 2)
         SELECT id FROM inserted`,
      [
        items.map(({ job }) => job.id),
        items.map(({ job }) => job.client),
        items.map(({ job }) => job.nonce),
        items.map(({ job }) => job.requestHash),
        items.map(({ job }) => job.model),
        items.map(({ job }) => job.requestJson),
        items.map(({ job }) => job.maxAttempts),
        items.map(({ job }) => job.expiresAt),
        items.map(({ at }) => at),
        MODEL_LABELS_MAX,
      ],
    );
    const created = new Set(rows.map((r) => r.id));
    return items.map(({ job }) => created.has(job.id));
  });

  // GCRA in the database (migration 0007): the draws of one turn in one call, the budgets' rows
  // locked only inside it. Each request's draws are all or nothing, decided in the order they came.
  type Draw = { checks: readonly RateCheck[]; at: number };
  const consumeRates = async (items: Draw[]): Promise<RateDecision[][]> => {
    const owned = items.flatMap(({ checks }, owner) => checks.map((check) => [owner, check] as const));
    const { rows } = await db.query<{ allowed_out: boolean; tat_out: number }>(
      'SELECT allowed_out, tat_out FROM proxy_consume_rates($1::int[], $2::text[], $3::bigint[], $4::bigint[], $5)',
      [owned.map(([owner]) => owner), owned.map(([, c]) => c.key), owned.map(([, c]) => c.intervalMs), owned.map(([, c]) => c.toleranceMs), Math.max(...items.map((d) => d.at))],
    );
    let next = 0;
    return items.map(({ checks }) =>
      checks.map(() => {
        const row = rows[next++] as { allowed_out: boolean; tat_out: number };
        return { allowed: row.allowed_out, tat: row.tat_out };
      }),
    );
  };
  const draws = createTurnBatch<Draw, RateDecision[]>(consumeRates);

  // Every way an attempt ends a job (completed, failed, expired, cancelled) is one statement: an
  // upstream outage fails jobs as fast as a healthy one completes them. A held job never has an
  // answer or an error yet (requeue starts only failed and expired jobs afresh and clears their
  // errors), so each ending writes all six of those columns, the ones it does not have as NULL.
  type Ending = {
    id: string;
    token: number;
    at: number;
    status: 'completed' | 'failed' | 'expired' | 'cancelled';
    bumps: Bump[];
    tokens: TokenCounts | undefined;
  } & Pick<JobRow, 'output_text' | 'usage' | 'response' | 'error_code' | 'error_message' | 'upstream_status'>;
  // The labels by model (the finished count's, a completion's tokens') are built in SQL as
  // JSON.stringify would, with sorted keys, so they match every other writer's (tokenBumps on
  // SQLite). An attempt's bumps and tokens count only when its job's token was current.
  const endings = createTurnBatch<Ending, boolean>(async (items) => {
    const { rows } = await db.query<{ id: string }>(
      `WITH input AS (
           SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::int[],
                                $11::bigint[], $12::bigint[])
             AS v(id, token, at, status, output_text, usage, response, error_code, error_message, upstream_status,
                  prompt_tokens, completion_tokens)),
         done AS (
           UPDATE jobs j
              SET status = v.status, finished_at = v.at, updated_at = v.at, lease_until = NULL,
                  output_text = v.output_text, usage = v.usage, response = v.response,
                  error_code = v.error_code, error_message = v.error_message, upstream_status = v.upstream_status
             FROM input v
            WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'in_progress'
           RETURNING j.id, j.model, j.status),
         labelled AS (
           SELECT id, status,
                  to_json(CASE WHEN EXISTS (SELECT 1 FROM counter_models known WHERE known.model = done.model) THEN model ELSE '(other)' END)::text AS model_json
             FROM done),
         counted AS (
           INSERT INTO counter_deltas (name, labels, value)
           SELECT 'jobs_finished_total', '{"model":' || model_json || ',"status":' || to_json(status)::text || '}', COUNT(*)
             FROM labelled GROUP BY model_json, status
           UNION ALL
           SELECT 'tokens_total', '{"kind":"' || t.kind || '","model":' || l.model_json || '}', SUM(t.n)
             FROM labelled l JOIN input v ON v.id = l.id
            CROSS JOIN LATERAL (VALUES ('prompt', v.prompt_tokens), ('completion', v.completion_tokens)) AS t(kind, n)
            WHERE t.n IS NOT NULL GROUP BY t.kind, l.model_json
           UNION ALL
           SELECT b.name, b.labels, SUM(b.value) FROM unnest($13::text[], $14::text[], $15::text[], $16::float8[]) AS b(id, name, labels, value)
            WHERE b.id IN (SELECT id FROM done) GROUP BY b.name, b.labels)
         SELECT id FROM done`,
      [
        items.map((e) => e.id),
        items.map((e) => e.token),
        items.map((e) => e.at),
        items.map((e) => e.status),
        items.map((e) => e.output_text), // as resultColumns(…, pgText) made it
        items.map((e) => e.usage),
        items.map((e) => e.response),
        items.map((e) => pgText(e.error_code)),
        items.map((e) => pgText(e.error_message)),
        items.map((e) => e.upstream_status),
        items.map((e) => e.tokens?.prompt ?? null),
        items.map((e) => e.tokens?.completion ?? null),
        ...bumpArrays(items),
      ],
    );
    const done = new Set(rows.map((r) => r.id));
    return items.map((e) => done.has(e.id));
  });

  // A retry puts the job back with its error; one statement for the retries of a turn, as endings.
  // It counts no tokens: only a completion's answer reports them (process-job.ts).
  type Retry = { id: string; token: number; at: number; runAfter: number; bumps: Bump[] } & Pick<JobRow, 'error_code' | 'error_message' | 'upstream_status'>;
  const retries = createTurnBatch<Retry, boolean>(async (items) => {
    const { rows } = await db.query<{ id: string }>(
      `WITH input AS (
           SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::int[])
             AS v(id, token, at, run_after, error_code, error_message, upstream_status)),
         done AS (
           UPDATE jobs j
              SET status = 'queued', run_after = v.run_after, updated_at = v.at, lease_until = NULL, worker_id = NULL,
                  error_code = v.error_code, error_message = v.error_message, upstream_status = v.upstream_status
             FROM input v
            WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'in_progress'
           RETURNING j.id, j.model),
         counted AS (
           INSERT INTO counter_deltas (name, labels, value)
           SELECT 'retries_total',
                  '{"model":' || to_json(CASE WHEN EXISTS (SELECT 1 FROM counter_models known WHERE known.model = done.model) THEN model ELSE '(other)' END)::text || '}',
                  COUNT(*)
             FROM done GROUP BY model
           UNION ALL
           SELECT b.name, b.labels, SUM(b.value) FROM unnest($8::text[], $9::text[], $10::text[], $11::float8[]) AS b(id, name, labels, value)
            WHERE b.id IN (SELECT id FROM done) GROUP BY b.name, b.labels)
         SELECT id FROM done`,
      [
        items.map((r) => r.id),
        items.map((r) => r.token),
        items.map((r) => r.at),
        items.map((r) => r.runAfter),
        items.map((r) => pgText(r.error_code)),
        items.map((r) => pgText(r.error_message)),
        items.map((r) => r.upstream_status),
        ...bumpArrays(items),
      ],
    );
    const done = new Set(rows.map((r) => r.id));
    return items.map((r) => done.has(r.id));
  });
  return { inserts, draws, endings, retries };
}
