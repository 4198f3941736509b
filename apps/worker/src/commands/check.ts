import { performance } from 'node:perf_hooks';
import { cutText, loadConfig, printable } from '@proxy/core';
import { createUpstreamClientFromConfig, judgeFailure } from '@proxy/core/runner';
import { output } from './admin-context.js';

/** What `check` asks: the least a chat model can be asked, with no parameter a server might refuse. */
const CHECK_PROMPT = 'Reply with the word OK.';

/**
 * `proxy-worker check`: one chat completion, made as a worker makes its calls (the same key, base
 * URL, proxy, CA file, streaming and timeout), to find out at install time whether they work, not from the
 * first job's error. It costs one small call. Exit 0 when the upstream answered a completion.
 */
export async function runCheck(opts: { model?: string; json?: boolean }): Promise<void> {
  const config = loadConfig({ needs: { upstream: true } });
  const model = opts.model ?? config.upstream.defaultModel;
  const base = new URL(config.upstream.baseUrl);
  // Without its query string, which may hold a gateway's key; the proxy without its credentials.
  const upstream = `${base.origin}${base.pathname}`;
  const proxy = config.upstream.proxyUrl ? new URL(config.upstream.proxyUrl).origin : null;
  // Their names only: a value may be a gateway's key.
  const headers = Object.keys(config.upstream.extraHeaders);
  // What every report names, whatever came back.
  const asked = { upstream, proxy, headers, model, stream: config.upstream.stream };
  // What the client changed in how it calls, said in the report: the worker would do the same.
  const notices: string[] = [];
  const client = createUpstreamClientFromConfig(config, (message) => notices.push(message));
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  let report: CheckReport;
  try {
    const outcome = await client.chat(JSON.stringify({ model, messages: [{ role: 'user', content: CHECK_PROMPT }] }), AbortSignal.timeout(config.upstream.timeoutMs));
    const requestId = outcome.requestId ?? null;
    if (outcome.kind === 'ok') {
      report = { ok: true, ...asked, status: outcome.status, ms: ms(), upstream_request_id: requestId, answer: outcome.outputText, finish_reason: outcome.finishReason };
    } else if (outcome.kind === 'local_shortage') {
      report = { ok: false, ...asked, ms: ms(), upstream_request_id: null, error: { code: 'local_shortage', message: outcome.message }, retried: true };
    } else {
      const verdict = judgeFailure(outcome, Date.now());
      const status = 'status' in outcome ? outcome.status : null;
      report = {
        ok: false,
        ...asked,
        status,
        ms: ms(),
        upstream_request_id: requestId,
        error: { code: verdict.error.code, message: verdict.error.message },
        retried: verdict.retryable,
        ...(verdict.hint ? { hint: verdict.hint } : {}),
      };
    }
  } catch (err) {
    // Only the timeout's own abort ends a call by throwing.
    if ((err as Error)?.name !== 'TimeoutError') throw err;
    const message = `no answer within UPSTREAM_TIMEOUT_SECONDS (${config.upstream.timeoutMs / 1000} s)`;
    report = { ok: false, ...asked, ms: ms(), upstream_request_id: null, error: { code: 'upstream_timeout', message }, retried: true };
  } finally {
    await client.close();
  }
  if (notices.length > 0) report.notices = notices;
  output(Boolean(opts.json), report, () => render(report));
  if (!report.ok) process.exitCode = 1;
}

type CheckReport = {
  upstream: string;
  proxy: string | null;
  /** The names of the UPSTREAM_HEADERS sent. */
  headers: string[];
  model: string;
  /** Whether the answer was asked for streamed (UPSTREAM_STREAM). */
  stream: boolean;
  status?: number | null;
  ms: number;
  upstream_request_id: string | null;
  /** What the client changed in how it calls, when it did (the upstream refused stream_options). */
  notices?: string[];
} & (
  | { ok: true; answer: string | null; /** Why the answer's first choice stopped, as the upstream says. */ finish_reason: string | null }
  | { ok: false; error: { code: string; message: string }; retried: boolean; hint?: string }
);

/** Why an answer has no text, where its finish reason says: jobs that meet the same come back empty. */
function noTextWhy(finishReason: string | null): string {
  if (finishReason === 'length') return ' (finish_reason "length": the model reached its token limit before writing any; a reasoning model can spend it all thinking)';
  return finishReason === null || finishReason === 'stop' ? '' : ` (finish_reason ${JSON.stringify(finishReason)})`;
}

function render(r: CheckReport): string {
  const lines = [
    `upstream: ${r.upstream}${r.proxy ? ` (through the proxy ${r.proxy})` : ''}`,
    ...(r.headers.length > 0 ? [`headers: ${r.headers.join(', ')} (UPSTREAM_HEADERS)`] : []),
    `model: ${r.model}${r.stream ? ', answer streamed (UPSTREAM_STREAM)' : ''}`,
  ];
  const answered = `${r.status ? `HTTP ${r.status}` : 'no answer'} after ${r.ms} ms${r.upstream_request_id ? `, upstream request id ${printable(r.upstream_request_id)}` : ''}`;
  if (r.ok) {
    lines.push(
      `answered: ${answered}${r.answer ? `: ${printable(JSON.stringify(cutText(r.answer, 80)))}` : `, with no text${noTextWhy(r.finish_reason)}`}`,
      'ok: a worker can call the upstream with these settings',
    );
  } else {
    lines.push(
      `failed: ${answered}`,
      `error: ${r.error.code}: ${printable(r.error.message)}`,
      r.retried ? 'a job meeting this is tried again, until its attempts run out' : 'a job meeting this fails at once: it is not tried again',
    );
    if (r.hint) lines.push(`hint: ${r.hint}`);
  }
  for (const notice of r.notices ?? []) lines.push(`note: ${notice}`);
  return lines.join('\n');
}
