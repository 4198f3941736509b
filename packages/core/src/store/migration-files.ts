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

/** The code of the error a store fails with once a later release migrated its database under it. */
export const LATER_RELEASE_CODE = 'PROXY_LATER_RELEASE';

/** A running store's watch for a later release's migrations (watchLaterMigrations). */
export interface LaterMigrationsWatch {
  /** The last version this release has a file for: the migrations recorded past it are a later release's. */
  readonly after: number;
  /**
   * Judges the migrations recorded past `after`: the error every write fails with from then on
   * when one of them is not compatible (kept: later calls answer it at once), else null.
   */
  judge(later: ReadonlyArray<{ version: number; name: string }>): Error | null;
  /** That error, once a judgment found it. */
  readonly refused: Error | null;
}

/**
 * The start refuses a database a later release migrated (assertOurSchema), but a release rolled out
 * while this one still runs (a worker left running through an upgrade, another host) migrates it
 * under this one, which would go on writing rows the later schema reads otherwise. Each store asks
 * its database for the migrations past its own files (for each write on SQLite, inside its
 * transaction; every second on either) and hands them here. A compatible one is told to `onLater`
 * once; the first judgment is the start's, whose compatible ones the start told already. The first
 * that is not compatible is told to `onRefused`, once, and refuses every write after it.
 */
export function watchLaterMigrations(
  files: readonly string[],
  database: string,
  tell: { onLater?: (names: string[]) => void; onRefused?: (message: string) => void },
): LaterMigrationsWatch {
  const after = Math.max(0, ...files.map((file) => Number(file.slice(0, 4))));
  const told = new Set<string>();
  let started = false;
  let refused: Error | null = null;
  return {
    after,
    get refused() {
      return refused;
    },
    judge(later) {
      if (refused) return refused;
      const { compatible, refusing } = laterMigrations(later, files);
      if (refusing) {
        refused = Object.assign(new Error(laterReleaseMessage(database, refusing)), { code: LATER_RELEASE_CODE });
        tell.onRefused?.(refused.message);
        return refused;
      }
      const fresh = compatible.filter((name) => !told.has(name));
      fresh.forEach((name) => told.add(name));
      if (fresh.length > 0 && started) tell.onLater?.(fresh);
      started = true;
      return null;
    },
  };
}

/** Table names for a message: the first five, and an ellipsis for the rest. */
export function someTables(names: readonly string[]): string {
  return names.length > 5 ? `${names.slice(0, 5).join(', ')}, …` : names.join(', ');
}
