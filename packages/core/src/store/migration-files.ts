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

/**
 * How a migration says that a release before it can still run on the database it leaves: its file
 * name ends so (`0013_add_x_compatible.sql`). The name is what an earlier release reads, in
 * schema_migrations; it has no file of its own for that version. A migration that does not say so
 * is taken to change what earlier releases read and write, which errs toward a refused start.
 */
const COMPATIBLE = /_compatible\.sql$/;

/**
 * The migrations a database recorded that this program has no file for, a later release's: which
 * of them let this release run on (`compatible`), and the first that does not (`refusing`, null
 * when every one does). Both empty for a database this release or an earlier one made.
 */
export function laterMigrations(applied: ReadonlyArray<{ version: number; name: string }>, files: readonly string[]): { compatible: string[]; refusing: string | null } {
  const later = applied.filter(({ version }) => !files.some((file) => Number(file.slice(0, 4)) === version)).map(({ name }) => name);
  return { compatible: later.filter((name) => COMPATIBLE.test(name)), refusing: later.find((name) => !COMPATIBLE.test(name)) ?? null };
}

/** The one line that refuses a database a later release migrated past what this one can run on. */
export function laterReleaseMessage(database: string, migration: string): string {
  return `${database} was migrated by a later release of this program: its migration ${migration} may change what this release reads and writes; run that release (or a later one), or restore a backup made before it`;
}

/** Table names for a message: the first five, and an ellipsis for the rest. */
export function someTables(names: readonly string[]): string {
  return names.length > 5 ? `${names.slice(0, 5).join(', ')}, …` : names.join(', ');
}
