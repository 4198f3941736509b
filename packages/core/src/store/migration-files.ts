import { readdirSync } from 'node:fs';

/** The numbered migration files in `dir` (0001_name.sql), in order. */
export function migrationFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
}

/**
 * The first migration a database recorded under another name than this program's file of that
 * version, said as `its migration 1 is X, where Y belongs`; null when every one it knows matches.
 * Versions this program has no file for (a newer release's) are not judged here.
 */
export function foreignMigration(applied: ReadonlyArray<{ version: number; name: string }>, files: readonly string[]): string | null {
  for (const { version, name } of applied) {
    const ours = files.find((file) => Number(file.slice(0, 4)) === version);
    if (ours !== undefined && ours !== name) return `its migration ${version} is ${name}, where ${ours} belongs`;
  }
  return null;
}

/** Table names for a message: the first five, and an ellipsis for the rest. */
export function someTables(names: readonly string[]): string {
  return names.length > 5 ? `${names.slice(0, 5).join(', ')}, …` : names.join(', ');
}
