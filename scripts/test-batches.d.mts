/** Test files run on SQLite only, named by their paths' last parts (see test-batches.mjs). */
export const SQLITE_ONLY: readonly string[];
/** Test files run alone, after the rest. */
export const ALONE: readonly string[];
/** Test files each batch starts first, longest first. */
export const LONGEST_FIRST: readonly string[];
/** `files` in the order a batch starts them: LONGEST_FIRST's, in its order, then the rest as they came. */
export function startOrder(files: readonly string[]): string[];
/** Whether `name` is the end of `path` from a folder boundary on. */
export function names(path: string, name: string): boolean;
/** The test files the runner runs, sorted: files among `roots`, and every *.test.ts in a test folder under the rest. */
export function findTestFiles(root: string, roots: readonly string[]): string[];
