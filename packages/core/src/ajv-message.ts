import type { ErrorObject } from 'ajv';

/**
 * What is wrong with the value an Ajv error names, as its message says it, but a choice names the
 * choices: Ajv says only "must be equal to one of the allowed values".
 */
export function ajvProblem(err: ErrorObject): string {
  if (err.keyword === 'enum') return `must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`;
  return err.message ?? 'is invalid';
}
