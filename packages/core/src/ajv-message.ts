import type { ErrorObject } from 'ajv';

/**
 * What is wrong with the value an Ajv error names, as its message says it, but a choice names the
 * choices: Ajv says only "must be equal to one of the allowed values".
 */
export function ajvProblem(err: ErrorObject): string {
  if (err.keyword === 'enum') return `must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`;
  // Ajv says "must NOT have fewer than 1 items".
  if (err.keyword === 'minItems' || err.keyword === 'maxItems') {
    const limit = (err.params as { limit: number }).limit;
    return `must have at ${err.keyword === 'minItems' ? 'least' : 'most'} ${limit} item${limit === 1 ? '' : 's'}`;
  }
  return err.message ?? 'is invalid';
}
