import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REFUSAL_COUNTS_MS, createRefusals } from '../src/refusals.ts';

test('a refusal counts for REFUSAL_COUNTS_MS, or until a create is stored', () => {
  let mono = 1000;
  const refusals = createRefusals(() => mono);
  assert.equal(refusals.lastRefusedAgoMs(), null, 'none yet');
  refusals.refused();
  mono += 3000;
  assert.equal(refusals.lastRefusedAgoMs(), 3000);
  mono += REFUSAL_COUNTS_MS - 3000 - 1;
  assert.equal(refusals.lastRefusedAgoMs(), REFUSAL_COUNTS_MS - 1);
  mono += 1;
  assert.equal(refusals.lastRefusedAgoMs(), null, 'no longer, with nothing refused since');
  refusals.refused();
  refusals.stored();
  assert.equal(refusals.lastRefusedAgoMs(), null, 'a create stored since');
});
