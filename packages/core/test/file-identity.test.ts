import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { logHeldForAnotherFile, logNotePath, strangers, untilLogIsOurs } from '../src/store/sqlite/file-identity.ts';
import { posixLocks } from '../src/store/sqlite/lock-holder.ts';
import { openSqliteStore } from '../src/store/sqlite/sqlite-job-store.ts';
import { restoreSqliteFile } from '../src/store/sqlite/restore.ts';
import { openStore } from '../src/store/open-store.ts';
import { isDatabaseUnavailable } from '../src/store/unavailable.ts';
import { eventually, newTestJob, tempDir, within, type TestHooks } from '../../../test/helpers/index.ts';

const onLinux = { skip: process.platform !== 'linux' && 'reads /proc/locks, which only Linux has' };
const settings = (path: string) => ({ path, sync: 'full' as const, url: null, schema: 'public' });
const jobsIn = (path: string) => {
  const db = new Database(path, { readonly: true });
  try {
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    return db.prepare('SELECT count(*) FROM jobs').pluck().get();
  } finally {
    db.close();
  }
};
const refusal = (write: Promise<unknown>) =>
  write.then(
    () => assert.fail('written'),
    (err: Error & { code?: string }) => err,
  );

/**
 * Another program with the store open at `path`, as a proxy-worker would be: it writes `jobs` jobs
 * (kept in its log: no checkpoint), says so, and closes its store when sent a line.
 */
function storeInAnotherProcess(path: string, jobs: number): Promise<ChildProcessWithoutNullStreams> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '-e',
      `
    const { openSqliteStore } = await import(${JSON.stringify(fileURLToPath(new URL('../src/store/sqlite/sqlite-job-store.ts', import.meta.url)))});
    const { newTestJob } = await import(${JSON.stringify(fileURLToPath(new URL('../../../test/helpers/index.ts', import.meta.url)))});
    const store = openSqliteStore({ path: process.argv[1], fileCheckMs: 60_000 });
    for (let i = 0; i < ${jobs}; i++) await store.createJob(newTestJob());
    console.log('ready');
    process.stdin.once('data', async () => { await store.close(); console.log('closed'); });`,
      path,
    ],
    { cwd: fileURLToPath(new URL('..', import.meta.url)) },
  );
  child.stderr.pipe(process.stderr);
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the other program exited with ${code}`)));
    child.stdout.once('data', () => resolve(child));
  });
}

test('a store whose file is moved away stops writing: it says so once, its writes fail as unavailable, health fails; closed, its log is folded into the moved file', async (t) => {
  const dir = tempDir(t);
  const path = `${dir}/db.sqlite`;
  const told: string[] = [];
  const store = openSqliteStore({ path, fileCheckMs: 20, onLost: (message) => told.push(message) });
  for (let i = 0; i < 3; i++) assert.equal((await store.createJob(newTestJob())).created, true);
  const kept = newTestJob();
  const { job } = await store.createJob(kept);

  renameSync(path, `${path}.moved`);
  await eventually(async () => told.length > 0, 5000);
  assert.deepEqual(told, [
    `the database file ${path} was moved away or deleted while this process had it open; it writes nothing more to it; a restart opens the file now at that path`,
  ]);
  const refused = await refusal(store.createJob(newTestJob()));
  assert.equal(refused.code, 'SQLITE_READONLY_DBMOVED');
  assert.ok(isDatabaseUnavailable(refused), 'an API answers it 503, a worker backs off');
  await assert.rejects(store.claimJobs({ limit: 1, leaseMs: 1000, workerId: 'w' }), /moved away or deleted/);
  await assert.rejects(store.ping(), /moved away or deleted/);
  assert.equal((await store.getJob(job.id))?.id, job.id, 'what it holds can still be read');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(told.length, 1, 'told once');

  await store.close();
  assert.equal(jobsIn(`${path}.moved`), 4, 'every job, the last writes from the log folded in');
  assert.equal(statSync(`${path}-wal`).size, 0, 'the log left at the path is empty: nothing of it can be replayed into another file');
});

/** A store in a folder of the test's own, looking at its files every `fileCheckMs`; what it was told of them. */
function watchedStore(t: TestHooks, fileCheckMs: number) {
  const dir = tempDir(t);
  const path = `${dir}/db.sqlite`;
  const told: string[] = [];
  const store = openSqliteStore({ path, fileCheckMs, onLost: (message) => told.push(message) });
  t.after(() => store.close());
  return { dir, path, told, store };
}

test('a store whose file is replaced by another says so; health fails at once, before the next look', async (t) => {
  const { dir, path, told, store } = watchedStore(t, 60_000);
  const other = openSqliteStore({ path: `${dir}/other.sqlite` });
  await other.close();
  renameSync(`${dir}/other.sqlite`, path);
  await assert.rejects(store.ping(), {
    code: 'SQLITE_READONLY_DBMOVED',
    message: `the database file ${path} was replaced while this process had it open; it writes nothing more to it`,
  });
  assert.equal(told.length, 1);
  await assert.rejects(store.createJob(newTestJob()), { code: 'SQLITE_READONLY_DBMOVED' });
});

test('a store whose limiter file (beside the database) is moved away says so as for the database, and its draws fail as unavailable', async (t) => {
  const { dir, told, store } = watchedStore(t, 20);
  const draw = () => store.consumeRateLimits([{ key: 'client:a', intervalMs: 10, toleranceMs: 1000 }]);
  assert.equal((await draw())[0]?.allowed, true);
  renameSync(`${dir}/db.limits.sqlite`, `${dir}/db.limits.sqlite.moved`);
  await eventually(async () => told.length > 0, 5000);
  assert.deepEqual(told, [
    `the database file ${dir}/db.limits.sqlite was moved away or deleted while this process had it open; it writes nothing more to it; a restart opens the file now at that path`,
  ]);
  const refused = await refusal(draw());
  assert.ok(isDatabaseUnavailable(refused), 'the API answers 503');
  await assert.rejects(store.createJob(newTestJob()), { code: 'SQLITE_READONLY_DBMOVED' }, 'nor the jobs: the program is stopping');
});

test("a store whose file and log were deleted, and a store opened since at the same path: the first one's close leaves the new one's log alone", async (t) => {
  const dir = tempDir(t);
  const path = `${dir}/db.sqlite`;
  const old = openSqliteStore({ path, fileCheckMs: 20, onLost: () => undefined });
  await old.createJob(newTestJob());
  for (const file of [path, `${path}-wal`, `${path}-shm`]) rmSync(file);
  const fresh = openSqliteStore({ path });
  t.after(() => fresh.close());
  const { job } = await fresh.createJob(newTestJob());
  const log = statSync(`${path}-wal`);
  await eventually(
    async () =>
      (await old.ping().then(
        () => false,
        () => true,
      )) || undefined,
    5000,
  );

  // SQLite, closing its last connection to the deleted file, would delete the -wal and -shm by
  // name: the new store's.
  await old.close();
  assert.equal(statSync(`${path}-wal`).ino, log.ino, "the new store's -wal is still there");
  assert.ok(existsSync(`${path}-shm`), "the new store's -shm is still there");
  assert.equal((await fresh.getJob(job.id))?.id, job.id);
  assert.equal((await fresh.createJob(newTestJob())).created, true);
});

test(
  'a start finds another program with the file that was at its path open: it waits, naming it, until that program closes, and then opens; past its wait it fails naming it',
  onLinux,
  async (t) => {
    const dir = tempDir(t);
    const path = `${dir}/db.sqlite`;
    const other = await storeInAnotherProcess(path, 5);
    t.after(() => other.kill('SIGKILL'));
    assert.deepEqual(logHeldForAnotherFile(path), [], 'the file it holds is the one at the path');

    renameSync(path, `${path}.moved`);
    assert.deepEqual(logHeldForAnotherFile(path), [other.pid]);
    await assert.rejects(untilLogIsOurs(path, { waitMs: 200 }), {
      message: `${path}-wal and -shm are in use by pid ${other.pid} (node), with another database open under this name (the file was moved or deleted while it ran): stop it, then start again`,
    });

    const warnings: string[] = [];
    const opening = openStore(settings(path), { logger: { warn: (message: string) => void warnings.push(message) } as never });
    await eventually(async () => warnings.length > 0, 5000);
    assert.deepEqual(warnings, [
      `PROXY_DB_PATH: waiting for pid ${other.pid} (node) to close the database it opened at ${path}, since moved or deleted; it still holds that database's log under this name`,
    ]);
    let opened = false;
    void opening.then(() => (opened = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(opened, false, 'it waits while the other program holds the log');

    other.stdin.write('close\n');
    const store = await within(opening, 10_000, 'the open after the other program closed');
    t.after(() => store.close());
    assert.equal(await store.countByStatus().then((counts) => counts.queued), 0, 'a new, empty file at the path');
    assert.equal(jobsIn(`${path}.moved`), 5, "the moved file holds the other program's jobs, its log folded in as it closed");
  },
);

/** Programs killed with `jobs` jobs still in the file's log, as a crash or `kill -9` leaves them. */
async function killedWithLog(path: string, jobs: number): Promise<void> {
  const other = await storeInAnotherProcess(path, jobs);
  other.kill('SIGKILL');
  await new Promise((resolve) => other.once('exit', resolve));
  assert.ok(statSync(`${path}-wal`).size > 32, 'the jobs are in the log');
}

/** A database of `jobs` jobs, closed cleanly (a backup): no log beside it. */
async function cleanFile(path: string, jobs: number): Promise<void> {
  const store = openSqliteStore({ path });
  for (let i = 0; i < jobs; i++) await store.createJob(newTestJob());
  await store.close();
  assert.equal(existsSync(`${path}-wal`), false);
  assert.equal(existsSync(logNotePath(path)), false, 'closed cleanly, the note goes with the log');
}

const queued = async (path: string) => {
  const store = await openStore(settings(path));
  try {
    return (await store.countByStatus()).queued;
  } finally {
    await store.close();
  }
};

test('a start refuses a -wal with writes in it beside no database (its writer killed, the file then moved): SQLite would delete it at the next start', onLinux, async (t) => {
  const dir = tempDir(t);
  const path = `${dir}/db.sqlite`;
  await killedWithLog(path, 5);
  renameSync(path, `${path}.moved`);
  await assert.rejects(openStore(settings(path)), {
    message: `PROXY_DB_PATH: cannot open sqlite ${path}: ${path} is missing but its -wal holds writes, the last of a database moved or deleted while a program had it open: put that database back at this path (or its -wal and -shm beside it under its own name); if it is gone for good, delete ${path}-wal and ${path}-shm`,
  });
  assert.equal(existsSync(path), false, 'nothing was made at the path');
  // Followed, the message's advice keeps every job.
  renameSync(`${path}-wal`, `${path}.moved-wal`);
  renameSync(`${path}-shm`, `${path}.moved-shm`);
  assert.equal(jobsIn(`${path}.moved`), 5);
});

test(
  'a start refuses a -wal with writes made to another file (programs killed, a backup then moved into place), where SQLite replayed it into the backup; the advice followed keeps both',
  onLinux,
  async (t) => {
    const dir = tempDir(t);
    const path = `${dir}/db.sqlite`;
    await cleanFile(`${dir}/backup.sqlite`, 2);
    await killedWithLog(path, 5);
    renameSync(path, `${dir}/crashed.sqlite`);
    renameSync(`${dir}/backup.sqlite`, path);
    await assert.rejects(openStore(settings(path)), {
      message: `PROXY_DB_PATH: cannot open sqlite ${path}: ${path}-wal holds writes made to another database file, the one at this path when its programs last ran (stopped without closing it: killed, or the machine went down), since replaced by the file there now; SQLite would replay them into it. To open the file there now, move ${path}-wal and ${path}-shm beside the database they belong to under its name (or delete them, and those writes with them); to keep those writes, put that database back at this path`,
    });
    // A restore onto it folds nothing: the mix would be the file it keeps.
    await cleanFile(`${dir}/nightly.sqlite`, 3);
    assert.throws(() => restoreSqliteFile(path, `${dir}/nightly.sqlite`), { message: new RegExp(`^${path}-wal holds writes made to another database file`) });
    assert.deepEqual(
      readdirSync(dir)
        .filter((name) => name.startsWith('db.sqlite') || name.includes('.replaced-') || name.endsWith('.partial'))
        .sort(),
      ['db.sqlite', 'db.sqlite-shm', 'db.sqlite-wal', 'db.sqlite-wal-owner'],
      'nothing changed',
    );
    renameSync(`${path}-wal`, `${dir}/crashed.sqlite-wal`);
    renameSync(`${path}-shm`, `${dir}/crashed.sqlite-shm`);
    assert.equal(jobsIn(`${dir}/crashed.sqlite`), 5, "the killed programs' file, its log beside it again");
    assert.equal(await queued(path), 2, 'the backup, as it was');
    assert.equal(jobsIn(path), 2);
  },
);

test(
  'a start opens as before a -wal left by programs killed on the file at the path, a folder copied whole after them, and a file whose note is out of date while a program has it open',
  onLinux,
  async (t) => {
    const dir = tempDir(t);
    const path = `${dir}/db.sqlite`;
    await killedWithLog(path, 5);
    const note = JSON.parse(readFileSync(logNotePath(path), 'utf8')) as { db: string; wal: string };
    assert.deepEqual(
      note,
      { db: `${statSync(path).dev}:${statSync(path).ino}`, wal: `${statSync(`${path}-wal`).dev}:${statSync(`${path}-wal`).ino}` },
      'the note names the file and its log',
    );

    // Copied whole, the file and its log each have another inode than the note names.
    mkdirSync(`${dir}/copy`);
    for (const suffix of ['', '-wal', '-shm', '-wal-owner']) copyFileSync(`${path}${suffix}`, `${dir}/copy/db.sqlite${suffix}`);
    assert.equal(await queued(`${dir}/copy/db.sqlite`), 5, 'the copied folder');
    assert.equal(await queued(path), 5, 'the file the programs were killed on');

    // A program with the file open: its log is the file's, whatever an old note says.
    const other = await storeInAnotherProcess(path, 1);
    t.after(() => other.kill('SIGKILL'));
    writeFileSync(logNotePath(path), `${JSON.stringify({ db: '1:1', wal: `${statSync(`${path}-wal`).dev}:${statSync(`${path}-wal`).ino}` })}\n`);
    assert.equal(await queued(path), 6, 'opened beside the other program');
  },
);

test('who holds a log for another file, from /proc/locks: a lock on the -shm and none on the database now at the path; this process and waiters aside', () => {
  const locks = posixLocks(
    [
      '1: POSIX  ADVISORY  READ 301 fe:00:70 128 128',
      '2: POSIX  ADVISORY  READ 301 fe:00:60 1073741826 1073742335',
      '3: POSIX  ADVISORY  READ 302 fe:00:70 128 128',
      '4: POSIX  ADVISORY  READ 302 fe:00:59 1073741826 1073742335',
      '5: -> POSIX  ADVISORY  WRITE 303 fe:00:70 120 120',
      `6: POSIX  ADVISORY  READ ${process.pid} fe:00:70 128 128`,
      '7: POSIX  ADVISORY  READ 304 fe:00:70 123 123',
      '8: POSIX  ADVISORY  READ 304 fe:00:70 128 128',
      '',
    ].join('\n'),
  );
  assert.deepEqual(strangers(locks, 'fe:00:70', 'fe:00:60'), [302, 304], '301 holds the database at the path; 302 another; 304 counted once');
  assert.deepEqual(strangers(locks, 'fe:00:70', null), [301, 302, 304], 'no database at the path: every holder has another');
  assert.deepEqual(strangers(locks, 'fe:00:71', 'fe:00:60'), [], 'another -shm');
});
