/** Test files run on SQLite only, named by their paths' last parts (see test-batches.mjs). */
export const SQLITE_ONLY: readonly string[];
/** Test files run alone, after the rest. */
export const ALONE: readonly string[];
/** Whether `name` is the end of `path` from a folder boundary on. */
export function names(path: string, name: string): boolean;
