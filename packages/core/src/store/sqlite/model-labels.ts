import { MODEL_LABELS_MAX, OTHER_MODEL } from '../counter-labels.js';
import type { Db } from './open-database.js';

/** Past this many models remembered, the memory of the labels starts afresh (they are read again). */
const REMEMBERED_MAX = 10_000;

/**
 * The label each model is counted under (counter-labels.ts), for writes inside the write queue's
 * transaction. A create admits its model while fewer than MODEL_LABELS_MAX are; other writes only
 * look. What was read is remembered, since a model's label never changes once given: admitted
 * models stay, and a model turned away stays so, since the table never shrinks. Remembered models
 * are forgotten when a transaction rolls back (its admissions with it) and when they grow past
 * REMEMBERED_MAX (models turned away are unbounded).
 */
export function createModelLabels(db: Db, max = MODEL_LABELS_MAX) {
  const admitted = db.prepare<[string]>('SELECT 1 FROM counter_models WHERE model = ?').pluck();
  const admit = db.prepare<{ model: string; max: number }>(
    // Counted no further than the bound: an older file may hold many more (0013 kept them all).
    'INSERT INTO counter_models (model) SELECT :model WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM counter_models LIMIT :max)) < :max',
  );
  const known = new Map<string, string>();
  // Once a create is turned away the table is full for good, and a model remembered as turned away
  // needs no second look. Before, one `of` remembered so may still be admitted by a create: a job
  // copied in finished, or created by a release before the table, is counted without admitting.
  let full = false;
  const remember = (model: string, label: string): string => {
    if (known.size >= REMEMBERED_MAX) known.clear();
    known.set(model, label);
    return label;
  };
  return {
    /** The label of a job's model as it is created: admitted while there is room. */
    admit(model: string): string {
      const label = known.get(model);
      if (label !== undefined && (label !== OTHER_MODEL || full)) return label;
      if (admitted.get(model) !== undefined) return remember(model, model);
      if (admit.run({ model, max }).changes === 1) return remember(model, model);
      full = true;
      return remember(model, OTHER_MODEL);
    },
    /** The label of a model whose job was created before (and admitted then, or not). */
    of(model: string): string {
      return known.get(model) ?? remember(model, admitted.get(model) === undefined ? OTHER_MODEL : model);
    },
    /** The transaction rolled back: an admission it made is gone. */
    forget() {
      known.clear();
      full = false;
    },
  };
}
