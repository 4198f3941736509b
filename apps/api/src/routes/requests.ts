import type { RequestHandler, Response } from 'express';
import {
  AppError,
  cancelRefusal,
  FINAL_STATUSES,
  isJobId,
  MAX_CLOCK_SKEW_SECONDS,
  newJobId,
  parseCreateRequest,
  sha256Hex,
  toJobView,
  type ChatMessage,
  type ChatRequest,
  type CreateRequestBody,
  type Config,
  type JobRecord,
  type JobStore,
} from '@proxy/core';
import { sendJson } from '../respond.js';
import { clientOf, ctx } from '../context.js';
import type { JobWatcher } from '../job-watcher.js';
import { readSignedBody } from '../signed-body.js';
import type { Refusals } from '../refusals.js';

/** A nonce replayed within this window returns the original job; later it is refused. */
export const NONCE_WINDOW_MS = 24 * 3600 * 1000;

export interface RequestRoutesDeps {
  store: JobStore;
  config: Config;
  now: () => number;
  /** Told when a create is stored: the database takes writes (refusals.ts). */
  refusals?: Pick<Refusals, 'stored'>;
}

/** POST /v1/requests: verify, validate, enqueue, answer 202 with the id. */
export function createRequestHandler({ store, config, now, refusals }: RequestRoutesDeps): RequestHandler {
  return async (req, res) => {
    const client = clientOf(res);
    const body = parseCreateRequest(readSignedBody(req.body, client));
    const at = now();
    if (Math.abs(at / 1000 - body.ts) > MAX_CLOCK_SKEW_SECONDS) {
      throw new AppError('stale_request', `ts must be within ${MAX_CLOCK_SKEW_SECONDS} s of the server's clock (server time ${Math.floor(at / 1000)})`);
    }
    const request = toChatRequest(body, config.upstream.defaultModel);
    const allowed = config.http.allowedModels;
    if (allowed && !allowed.includes(request.model)) {
      throw new AppError('invalid_request', `model ${request.model} is not offered here; use one of: ${allowed.join(', ')}`);
    }
    const ttlSeconds = body.ttl ?? config.jobs.ttlSeconds;
    // Written once: hashed here, stored as it is, sent upstream as it is. It was written twice (for
    // the hash and for the store); a 20 KB request took about 80 µs each time, timed alone.
    const requestJson = JSON.stringify(request);
    // Same nonce, same request → same job; "same" is what the upstream would be asked, not the bytes.
    // The text hashed is JSON.stringify([request, ttlSeconds]), as jobs stored before were hashed.
    const requestHash = sha256Hex(`[${requestJson},${JSON.stringify(ttlSeconds)}]`);
    const { job, created } = await store.createJob({
      id: newJobId(),
      client: client.name,
      nonce: body.nonce,
      requestHash,
      model: request.model,
      request,
      requestJson,
      maxAttempts: config.jobs.maxAttempts,
      expiresAt: at + ttlSeconds * 1000,
    });
    refusals?.stored();
    if (!created) {
      if (job.requestHash !== requestHash || at - job.createdAt > NONCE_WINDOW_MS) {
        throw new AppError('nonce_reused', 'this nonce was already used for a different request; use a fresh nonce');
      }
      ctx(res).jobId = job.id;
      ctx(res).log.info('idempotent replay', { job_id: job.id });
      sendCreated(res, 200, job);
      return;
    }
    // The access line carries the job id at info; this line adds the model for debugging.
    ctx(res).jobId = job.id;
    if (ctx(res).debug) ctx(res).log.debug('job queued', { job_id: job.id, model: job.model });
    sendCreated(res, 202, job);
  };
}

/** A create's answer: the job, and where to read it (ids are base64url: the path needs no encoding). */
function sendCreated(res: Response, status: 200 | 202, job: JobRecord): void {
  sendJson(res, status, toJobView(job), ['Location', `/v1/requests/${job.id}`]);
}

/** The longest long-poll a client may ask for, in seconds. */
export const MAX_WAIT_SECONDS = 60;

/**
 * GET /v1/requests/:id (or ?id= on the legacy route): the job, if it is this client's. With
 * `?wait=N` (N ≤ 60) the answer waits until the job is final or N seconds pass.
 */
export function getRequestHandler({ store, watcher }: Pick<RequestRoutesDeps, 'store'> & { watcher: JobWatcher }): RequestHandler {
  return async (req, res) => {
    const id = req.params.id ?? req.query.id;
    // Only the legacy route can come without one (…?action=result), or with two (&id=a&id=b).
    if (typeof id !== 'string') throw new AppError('invalid_request', 'give one id: ?action=result&id=ID');
    const waitSeconds = parseWait(req.query.wait);
    const client = clientOf(res);
    const read = async () => {
      // Another client's job is answered exactly like an unknown one, so ids cannot be probed.
      const job = isJobId(id) ? await store.getJobOutcome(id) : null;
      if (!job || job.client !== client.name) throw new AppError('not_found', 'no request with this id');
      return job;
    };
    // A long-poll listens for its client hanging up before the first read: one that left while the
    // read ran would otherwise hold a waiter (and the watcher's polling) for the whole wait, its
    // 'close' already gone by. A plain lookup makes no signal: built for every lookup and aborted at
    // every close (a DOMException each), it cost 144-165 µs of CPU a lookup against 121-143 (pinned).
    const gone = waitSeconds > 0 ? hangUpSignal(res) : null;
    if (res.closed) return;
    let job = await read();
    ctx(res).jobId = job.id;
    if (gone && !FINAL_STATUSES.has(job.status)) {
      await watcher.waitForFinal(job.id, waitSeconds * 1000, gone);
      if (gone.aborted) return;
      job = await read();
    }
    sendJson(res, 200, toJobView(job));
  };
}

/** Aborts when the client hangs up before its answer is sent (not when it is). */
function hangUpSignal(res: Response): AbortSignal {
  const hangUp = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) hangUp.abort();
  });
  return hangUp.signal;
}

function parseWait(value: unknown): number {
  if (value === undefined) return 0;
  // Express reads ?wait=1&wait=2 as a list.
  if (Array.isArray(value)) throw new AppError('invalid_request', `give one wait: ?wait=N, a whole number of seconds from 0 to ${MAX_WAIT_SECONDS}`);
  if (typeof value !== 'string' || !/^[0-9]{1,3}$/.test(value) || Number(value) > MAX_WAIT_SECONDS) {
    throw new AppError('invalid_request', `wait must be a whole number of seconds from 0 to ${MAX_WAIT_SECONDS}`);
  }
  return Number(value);
}

/**
 * DELETE /v1/requests/:id: a queued job is cancelled at once (200); a running one is cancelled by
 * the worker holding it, which aborts its call (202 until then); one cancelled already is 200 as
 * well; one that ended otherwise cannot be (409).
 */
export function cancelRequestHandler({ store, watcher }: Pick<RequestRoutesDeps, 'store'> & { watcher: JobWatcher }): RequestHandler {
  return async (req, res) => {
    const id = req.params.id;
    const client = clientOf(res);
    const before = isJobId(id) ? await store.getJob(id) : null;
    if (!before || before.client !== client.name) throw new AppError('not_found', 'no request with this id');
    ctx(res).jobId = before.id;
    // What was asked holds: a client sends its DELETE again when the answer to the first was lost
    // (a reset, a proxy's 502), and a 409 then read as a cancel refused.
    if (before.status === 'cancelled') return sendJson(res, 200, toJobView(before));
    refuseEnded(before);
    const job = await store.cancelJob(before.id, client.name);
    if (!job) throw new AppError('not_found', 'no request with this id');
    // It may have ended between the read and the cancel: the same 409 as above. Cancelled (by this
    // call, or by another just before it) is 200.
    refuseEnded(job);
    ctx(res).log.info('cancel requested', { job_id: job.id, status: job.status });
    if (job.status === 'cancelled') watcher.notify(job.id);
    sendJson(res, job.status === 'cancelled' ? 200 : 202, toJobView(job));
  };
}

/** A job that ended otherwise than cancelled cannot be cancelled: 409 conflict, naming how it ended. */
function refuseEnded(job: JobRecord): void {
  const why = cancelRefusal(job.status);
  if (why) throw new AppError('conflict', `the request ${why}`);
}

function toChatRequest(body: CreateRequestBody, defaultModel: string): ChatRequest {
  const messages: ChatMessage[] = [];
  if (body.system !== undefined) messages.push({ role: 'system', content: body.system });
  if (body.messages) messages.push(...body.messages);
  else messages.push({ role: 'user', content: body.prompt });
  return { ...(body.options ?? {}), model: body.model ?? defaultModel, messages };
}
