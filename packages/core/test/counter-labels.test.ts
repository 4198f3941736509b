import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attemptBumps, OTHER_MODEL, tokenBumps, tokenCounts } from '../src/store/counter-labels.ts';

test("a completion's tokens are read from its usage as OpenAI writes it; a count that is no whole number of at least 0 is none, and a usage with neither adds nothing", () => {
  assert.deepEqual(tokenCounts({ prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 }), { prompt: 12, completion: 30 });
  assert.deepEqual(tokenCounts({ prompt_tokens: 7 }), { prompt: 7, completion: 0 }, 'one of the two');
  assert.deepEqual(tokenCounts({ prompt_tokens: '7', completion_tokens: 3 }), { prompt: 0, completion: 3 }, 'a count written as text is none');
  for (const usage of [null, undefined, 'usage', 42, [], {}, { prompt_tokens: -1, completion_tokens: 1.5 }, { prompt_tokens: 0, completion_tokens: 0 }, { input_tokens: 5 }]) {
    assert.equal(tokenCounts(usage), undefined, JSON.stringify(usage));
  }
});

test("an attempt's counters: its call, its latency, and a completion's finish reason (its tokens go by model: tokenBumps)", () => {
  const call: Array<[string, string, number]> = [
    ['upstream_calls_total', '{"code":"200"}', 1],
    ['upstream_latency_seconds_bucket', '{"le":"0.25"}', 1],
    ['upstream_latency_seconds_sum', '{}', 0.2],
  ];
  assert.deepEqual(attemptBumps({ upstreamStatus: '200', latencyMs: 200, finishReason: 'stop', tokens: { prompt: 12, completion: 30 } }), [
    ...call,
    ['completions_total', '{"finish_reason":"stop"}', 1],
  ]);
  assert.deepEqual(attemptBumps({ upstreamStatus: '200', latencyMs: 200, finishReason: 'stop', tokens: undefined }), [
    ...call,
    ['completions_total', '{"finish_reason":"stop"}', 1],
  ]);
  assert.deepEqual(attemptBumps(undefined), []);
});

test("a completion's tokens are counted by kind and by its model's label, in the labels' JSON both stores write (sorted keys)", () => {
  assert.deepEqual(tokenBumps({ prompt: 12, completion: 30 }, 'gpt-4o-mini'), [
    ['tokens_total', '{"kind":"prompt","model":"gpt-4o-mini"}', 12],
    ['tokens_total', '{"kind":"completion","model":"gpt-4o-mini"}', 30],
  ]);
  assert.deepEqual(tokenBumps({ prompt: 5, completion: 0 }, OTHER_MODEL), [
    ['tokens_total', '{"kind":"prompt","model":"(other)"}', 5],
    ['tokens_total', '{"kind":"completion","model":"(other)"}', 0],
  ]);
  // Made once for each label and kept: the same again gives the same labels.
  assert.deepEqual(tokenBumps({ prompt: 1, completion: 2 }, 'org/model:v1.5'), [
    ['tokens_total', '{"kind":"prompt","model":"org/model:v1.5"}', 1],
    ['tokens_total', '{"kind":"completion","model":"org/model:v1.5"}', 2],
  ]);
  assert.equal(tokenBumps({ prompt: 1, completion: 2 }, 'gpt-4o-mini')[0]?.[1], '{"kind":"prompt","model":"gpt-4o-mini"}');
});
