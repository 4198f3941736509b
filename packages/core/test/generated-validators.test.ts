/**
 * The validators under src/generated/ are Ajv's code for the schemas as they stand: a schema changed
 * without `npm run generate` would otherwise be checked by its old version, silently.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { GENERATED_DIR, generateValidators } from '../../../scripts/generate-validators.ts';

test('each compiled validator is what npm run generate writes from the schemas as they stand, and no other file is there', () => {
  const fresh = generateValidators();
  assert.deepEqual(readdirSync(GENERATED_DIR).sort(), Object.keys(fresh).sort(), 'npm run generate writes exactly these files');
  for (const [name, text] of Object.entries(fresh)) {
    assert.ok(readFileSync(GENERATED_DIR + name, 'utf8') === text, `src/generated/${name} is out of date with its schema: run npm run generate`);
  }
});
