import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { laterReleaseMessage } from '../../packages/core/src/store/migration-files.ts';
import {
  WORKER_MAIN,
  completedJob,
  enqueueJob,
  getJson,
  newCredentials,
  nobodyUid,
  onlyOn,
  openTestStore,
  postSigned,
  runAsNobody,
  smallDisk,
  spawnNode,
  startApiProcess,
  startWorkerDaemon,
  tempDir,
  testEnv,
} from '../helpers/index.ts';

async function cli(env: Record<string, string>, dir: string, ...args: string[]) {
  const child = spawnNode(WORKER_MAIN, args, env, dir);
  const { code } = await child.exited;
  return { code, out: child.lines.join('\n'), err: child.stderr.filter(Boolean) };
}

function jobIds(path: string): Set<string> {
  const db = new Database(path, { readonly: true });
  try {
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    return new Set((db.prepare('SELECT id FROM jobs').all() as Array<{ id: string }>).map((r) => r.id));
  } finally {
    db.close();
  }
}

/** Stores `count` jobs (prompts `${prefix} ${i}`) in the configured file and backs it up to `dir`/b.sqlite; the backup's path. */
async function backupOfJobs(env: Record<string, string>, dir: string, count: number, prefix = 'job'): Promise<string> {
  const store = await openTestStore(env);
  for (let i = 0; i < count; i++) await enqueueJob(store, `${prefix} ${i}`);
  await store.close();
  const backup = join(dir, 'b.sqlite');
  const made = await cli(env, dir, 'backup', backup);
  assert.equal(made.code, 0, made.err.join('\n'));
  return backup;
}

/**
 * Damages a database the way a bad disk or a bug might, and `PRAGMA integrity_check` finds: two of
 * the jobs table's indexes swapped, so each misses the rows the other holds.
 */
function swapTwoJobIndexes(path: string): void {
  const db = new Database(path);
  try {
    const [first, second] = db
      .prepare(`SELECT name, rootpage FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL ORDER BY name LIMIT 2`)
      .all() as Array<{ name: string; rootpage: number }>;
    db.unsafeMode(true);
    db.pragma('writable_schema = ON');
    db.prepare('UPDATE sqlite_schema SET rootpage = ? WHERE name = ?').run(second!.rootpage, first!.name);
    db.prepare('UPDATE sqlite_schema SET rootpage = ? WHERE name = ?').run(first!.rootpage, second!.name);
  } finally {
    db.close();
  }
}

test('backup while creates stream in and the daemon works: a whole file holding every job stored before it began, which a restored API serves; run again, it replaces the copy whole', async (t) => {
  if (!onlyOn('sqlite', t, 'copies the SQLite file')) return;
  const dir = tempDir(t);
  const stub = await startStubUpstream({ behave: async () => (await new Promise((r) => setTimeout(r, 20)), {}) });
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, {
    PROXY_KEY: key,
    PROXY_SECRET: secret,
    OPENAI_API_KEY: 'sk-backup',
    OPENAI_BASE_URL: stub.url,
    RATE_LIMIT_PER_IP: '100000/min',
    RATE_LIMIT_PER_KEY: '100000/min',
  });
  const api = await startApiProcess(t, env, dir);
  startWorkerDaemon(t, env, dir);

  // Four clients create without pause until told to stop, recording each 202 with when it came.
  const stored: Array<{ id: string; at: number }> = [];
  let streaming = true;
  const clients = Array.from({ length: 4 }, async (_, c) => {
    for (let i = 0; streaming; i++) {
      const res = await postSigned(api.url, key, secret, { prompt: `c${c}-${i}` });
      assert.equal(res.status, 202, JSON.stringify(res.json));
      stored.push({ id: res.json.id, at: performance.now() });
    }
  });
  while (stored.length < 300) await new Promise((r) => setTimeout(r, 20));

  const target = join(dir, 'backup.sqlite');
  const { OPENAI_API_KEY: _key, ...adminEnv } = env;
  for (const round of [1, 2]) {
    const began = performance.now();
    // The second with --check: the copy is read whole before it replaces the first.
    const backup = await cli(adminEnv, dir, 'backup', target, ...(round === 2 ? ['--check'] : []));
    assert.equal(backup.code, 0, backup.err.join('\n'));
    assert.match(backup.out, new RegExp(`^backed up ${env.PROXY_DB_PATH} to ${target} \\(\\d+ jobs, \\d+\\.\\d MB${round === 2 ? ', integrity checked' : ''}\\) in \\d+\\.\\d s$`));
    const copied = jobIds(target);
    const before = stored.filter((s) => s.at < began);
    assert.ok(before.length >= 300 * round, `${before.length} creates answered before backup ${round} began`);
    for (const { id } of before) assert.ok(copied.has(id), `job ${id}, stored before backup ${round} began, is in the copy`);
    assert.equal(Number(/\((\d+) jobs/.exec(backup.out)?.[1]), copied.size, "the count printed is the copy's");
    // Nothing of the copy's making is left beside it.
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('backup')),
      ['backup.sqlite'],
    );
    while (stored.length < stored.filter((s) => s.at < began).length + 300) await new Promise((r) => setTimeout(r, 20));
  }
  streaming = false;
  await Promise.all(clients);

  // Restored: an API of its own on the copy serves the jobs it holds, finished ones with their answers.
  const restoredEnv = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, PROXY_DB_PATH: target });
  const restored = await startApiProcess(t, restoredEnv, dir);
  const copy = new Database(target, { readonly: true });
  const done = copy.prepare(`SELECT id, output_text FROM jobs WHERE status = 'completed' LIMIT 1`).get() as { id: string; output_text: string } | undefined;
  copy.close();
  assert.ok(done, 'the copy holds finished jobs');
  const view = await getJson(restored.url, `/v1/requests/${done.id}`, key);
  assert.equal(view.status, 200);
  assert.equal(view.json.output_text, done.output_text);
  assert.equal(api.child.proc.exitCode, null, 'the live API ran on');
});

test('backup refuses to write over the live file or its log (even through a link) or over a named pipe or device, and names a missing folder; the live file is untouched; a copy gets its permissions; a folder takes the copy under the live name; what a killed backup left is removed', async (t) => {
  if (!onlyOn('sqlite', t, 'copies the SQLite file')) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  const made = await cli(env, dir, 'stats');
  assert.equal(made.code, 0, made.err.join('\n'));
  const live = env.PROXY_DB_PATH as string;
  symlinkSync(dir, join(dir, 'link'));
  for (const target of [live, join(dir, 'link', 'requests.sqlite-wal')]) {
    const refused = await cli(env, dir, 'backup', target);
    assert.equal(refused.code, 1);
    assert.deepEqual(refused.err, [`proxy-worker: backup of ${live} to ${target} failed: the backup would replace the live database ${live} or its log; name another file`]);
  }
  const missing = await cli(env, dir, 'backup', join(dir, 'nowhere', 'b.sqlite'));
  assert.deepEqual(
    [missing.code, missing.err],
    [1, [`proxy-worker: backup of ${live} to ${join(dir, 'nowhere', 'b.sqlite')} failed: the folder ${join(dir, 'nowhere')} does not exist`]],
  );
  // A name ending in a slash is a folder (a nightly line whose folder is not made yet), not a file.
  const slashed = await cli(env, dir, 'backup', `${join(dir, 'nightly')}/`);
  assert.deepEqual([slashed.code, slashed.err], [1, [`proxy-worker: backup of ${live} to ${join(dir, 'nightly')}/ failed: the folder ${join(dir, 'nightly')} does not exist`]]);
  assert.equal(jobIds(live).size, 0);
  assert.ok(!existsSync(join(dir, 'nowhere')));
  assert.ok(!existsSync(join(dir, 'nightly')));

  // A named pipe or a device, named or linked to, is not replaced by a file: `backup /dev/null`,
  // run as root, had made /dev/null a file.
  const pipe = join(dir, 'pipe');
  execFileSync('mkfifo', [pipe]);
  symlinkSync(pipe, join(dir, 'to-pipe'));
  for (const target of [pipe, join(dir, 'to-pipe')]) {
    const refused = await cli(env, dir, 'backup', target);
    assert.deepEqual(
      [refused.code, refused.err],
      [1, [`proxy-worker: backup of ${live} to ${target} failed: ${target} is a named pipe, not a file; name a file for the backup, or a folder to put it in`]],
    );
    assert.ok(statSync(pipe).isFIFO());
  }

  // The copy gets the live file's permissions, whatever the umask.
  chmodSync(live, 0o600);
  const copied = await cli(env, dir, 'backup', join(dir, 'b.sqlite'));
  assert.equal(copied.code, 0, copied.err.join('\n'));
  assert.equal(statSync(join(dir, 'b.sqlite')).mode & 0o777, 0o600);
  const underFile = await cli(env, dir, 'backup', `${join(dir, 'b.sqlite')}/`);
  assert.deepEqual([underFile.code, underFile.err], [1, [`proxy-worker: backup of ${live} to ${join(dir, 'b.sqlite')}/ failed: ${join(dir, 'b.sqlite')} is not a folder`]]);

  // A folder takes the copy under the live file's name, as cp does.
  mkdirSync(join(dir, 'nightly'));
  const intoFolder = await cli(env, dir, 'backup', join(dir, 'nightly'));
  assert.equal(intoFolder.code, 0, intoFolder.err.join('\n'));
  assert.deepEqual(readdirSync(join(dir, 'nightly')), ['requests.sqlite']);

  // What a backup killed mid-copy left is removed by the next; a copy under way is not.
  const gone = spawnSync(process.execPath, ['-e', '']).pid as number;
  writeFileSync(join(dir, `.b.sqlite.${gone}.partial`), 'half a copy');
  writeFileSync(join(dir, `.b.sqlite.${process.pid}.partial`), 'a copy under way');
  assert.equal((await cli(env, dir, 'backup', join(dir, 'b.sqlite'))).code, 0);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.partial')),
    [`.b.sqlite.${process.pid}.partial`],
  );
});

test('backup --check: a copy that fails its integrity check leaves the backup before it in place; without --check the same copy replaces it', async (t) => {
  if (!onlyOn('sqlite', t, 'copies the SQLite file')) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  const target = await backupOfJobs(env, dir, 50);
  const good = readFileSync(target);

  // VACUUM INTO copies indexes page for page: the damage goes into the copy.
  swapTwoJobIndexes(env.PROXY_DB_PATH as string);

  const refused = await cli(env, dir, 'backup', target, '--check');
  assert.equal(refused.code, 1);
  assert.equal(refused.err.length, 1);
  assert.match(
    refused.err[0]!,
    new RegExp(`^proxy-worker: backup of ${env.PROXY_DB_PATH} to ${target} failed: the copy failed its integrity check, and the target was left as it was: [^;]*index jobs_`),
  );
  assert.deepEqual(readFileSync(target), good, 'the backup before is untouched');
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.partial')),
    [],
  );
  assert.equal((await cli(env, dir, 'backup', target)).code, 0, 'unchecked, the damaged copy goes through');
  assert.notDeepEqual(readFileSync(target), good);
});

test('backup and restore on PostgreSQL say to use pg_dump, and pg_restore or psql', async (t) => {
  if (!onlyOn('postgres', t, 'the SQLite file has its own backup and restore')) return;
  const dir = tempDir(t);
  const backup = await cli(testEnv(dir), dir, 'backup', join(dir, 'b.sqlite'));
  assert.deepEqual([backup.code, backup.err], [1, ['proxy-worker: backup copies the SQLite file; on PostgreSQL use pg_dump (see README, Scaling out)']]);
  const restore = await cli(testEnv(dir), dir, 'restore', join(dir, 'b.sqlite'));
  assert.deepEqual([restore.code, restore.err], [1, ['proxy-worker: restore replaces the SQLite file; on PostgreSQL restore with pg_restore or psql (see README, Scaling out)']]);
});

test('restore with the programs stopped: the backup is served again, jobs created after it are gone, the file it replaced is kept whole; refused, changing nothing, while the API or a worker has the file open', async (t) => {
  if (!onlyOn('sqlite', t, 'replaces the SQLite file')) return;
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-restore', OPENAI_BASE_URL: stub.url });
  const { OPENAI_API_KEY: _key, ...adminEnv } = env;
  const live = env.PROXY_DB_PATH as string;
  const api = await startApiProcess(t, env, dir);
  const worker = startWorkerDaemon(t, env, dir);
  const create = async (prompt: string, url = api.url) => {
    const res = await postSigned(url, key, secret, { prompt });
    assert.equal(res.status, 202, JSON.stringify(res.json));
    return res.json.id as string;
  };
  const before = [];
  for (let i = 0; i < 20; i++) before.push(await create(`before ${i}`));
  for (const id of before) await completedJob(api.url, key, id);
  const backup = join(dir, 'b.sqlite');
  assert.equal((await cli(adminEnv, dir, 'backup', backup)).code, 0);
  const after = [];
  for (let i = 0; i < 10; i++) after.push(await create(`after ${i}`));
  for (const id of after) await completedJob(api.url, key, id);

  // Refused while either program has the file open, and nothing changes.
  const refusedLine = `proxy-worker: restore refused, nothing was changed: ${live} is open in another process (proxy-api, a proxy-worker, or another SQLite client): stop them first, then restore`;
  const whileBoth = await cli(adminEnv, dir, 'restore', backup);
  assert.deepEqual([whileBoth.code, whileBoth.err], [1, [refusedLine]]);
  api.child.kill('SIGTERM');
  assert.equal((await api.child.exited).code, 0);
  const whileWorker = await cli(adminEnv, dir, 'restore', backup);
  assert.deepEqual([whileWorker.code, whileWorker.err], [1, [refusedLine]]);
  worker.kill('SIGTERM');
  assert.equal((await worker.exited).code, 0);
  assert.equal(jobIds(live).size, 30, 'the refused restores changed nothing');
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('.partial') || f.includes('replaced')),
    [],
  );

  // The restored file keeps the live file's permissions, and as root its owner, whoever restores it.
  chmodSync(live, 0o640);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) chownSync(live, 65534, 65534);
  const restored = await cli(adminEnv, dir, 'restore', backup);
  assert.equal(restored.code, 0, restored.err.join('\n'));
  const kept = /; the file it replaced is kept as (\S+)$/.exec(restored.out)?.[1] as string;
  assert.match(
    restored.out,
    new RegExp(
      `^restored ${live} from ${backup} \\(20 jobs, \\d+\\.\\d MB, integrity checked\\) in \\d+\\.\\d s; the file it replaced is kept as ${live}\\.replaced-\\d{8}T\\d{6}Z$`,
    ),
  );
  assert.deepEqual(jobIds(live), new Set(before));
  assert.deepEqual(jobIds(kept), new Set([...before, ...after]), 'the file replaced is whole, its log folded in');
  assert.ok(!existsSync(`${live}-wal`) && !existsSync(`${live}-shm`), "the old file's log is not left beside the copy");
  assert.equal(statSync(live).mode & 0o777, 0o640);
  if (asRoot) assert.deepEqual([statSync(live).uid, statSync(live).gid], [65534, 65534]);
  if (asRoot) chownSync(live, 0, 0);

  // Started again on it, the programs serve the backup's jobs and run new ones.
  const again = await startApiProcess(t, env, dir);
  startWorkerDaemon(t, env, dir);
  const old = await getJson(again.url, `/v1/requests/${before[7]}`, key);
  assert.deepEqual([old.status, old.json.output_text], [200, 'echo: before 7']);
  assert.equal((await getJson(again.url, `/v1/requests/${after[0]}`, key)).status, 404);
  assert.equal((await completedJob(again.url, key, await create('after the restore', again.url))).output_text, 'echo: after the restore');
});

test("restore refuses what is no backup of this database, changing nothing: a missing file, the live file through a link, not SQLite, another program's SQLite, a damaged copy; a live file too damaged to lock needs --force; onto no file at all it just puts the copy there, onto a named pipe it does not", async (t) => {
  if (!onlyOn('sqlite', t, 'replaces the SQLite file')) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  const live = env.PROXY_DB_PATH as string;
  const backup = await backupOfJobs(env, dir, 5);
  const liveBytes = readFileSync(live);
  const untouched = () => {
    assert.deepEqual(readFileSync(live), liveBytes, 'the live file changed');
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('.partial') || f.includes('replaced')),
      [],
    );
  };
  const refused = async (from: string, reason: string) => {
    const run = await cli(env, dir, 'restore', from);
    assert.deepEqual([run.code, run.err], [1, [`proxy-worker: restore of ${from} to ${live} failed, nothing was changed: ${reason}`]]);
    untouched();
  };

  await refused(join(dir, 'none.sqlite'), `there is no backup at ${join(dir, 'none.sqlite')}`);
  await refused(dir, `${dir} is a folder, not a backup file`);
  symlinkSync(dir, join(dir, 'link'));
  await refused(join(dir, 'link', 'requests.sqlite'), `${join(dir, 'link', 'requests.sqlite')} is the live database or its log, not a backup of it`);
  writeFileSync(join(dir, 'notes.txt'), 'not a database at all, but long enough to look like one might be');
  await refused(join(dir, 'notes.txt'), `${realpathSync(join(dir, 'notes.txt'))} could not be read as a SQLite database: file is not a database`);
  const other = new Database(join(dir, 'other.sqlite'));
  other.exec('CREATE TABLE notes (text TEXT)');
  other.close();
  await refused(join(dir, 'other.sqlite'), `${realpathSync(join(dir, 'other.sqlite'))} is a SQLite database, but not this program's (it has no jobs table)`);
  // A backup a later release made, after a migration this release cannot run on.
  const later = join(dir, 'later.sqlite');
  writeFileSync(later, readFileSync(backup));
  const laterDb = new Database(later);
  laterDb.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9001, '9001_later_change.sql', 0)").run();
  laterDb.close();
  await refused(later, laterReleaseMessage(realpathSync(later), '9001_later_change.sql'));

  const damaged = join(dir, 'damaged.sqlite');
  writeFileSync(damaged, readFileSync(backup));
  swapTwoJobIndexes(damaged);
  const run = await cli(env, dir, 'restore', damaged);
  assert.equal(run.code, 1);
  assert.match(
    run.err.join('\n'),
    new RegExp(
      `^proxy-worker: restore of ${damaged} to ${live} failed, nothing was changed: the copy failed its integrity check, and the target was left as it was: [^;]*index jobs_`,
    ),
  );
  untouched();

  // The live file's header destroyed: SQLite cannot say whether a program has it open.
  const wrecked = Buffer.from(liveBytes);
  wrecked.fill(0, 0, 100);
  writeFileSync(live, wrecked);
  const unsure = await cli(env, dir, 'restore', backup);
  assert.equal(unsure.code, 1);
  assert.match(
    unsure.err.join('\n'),
    /cannot be read as a database \(file is not a database\), so whether a program has it open cannot be asked; once proxy-api and the workers are stopped, run again with --force to replace it$/,
  );
  assert.deepEqual(readFileSync(live), wrecked);
  const forced = await cli(env, dir, 'restore', backup, '--force');
  assert.equal(forced.code, 0, forced.err.join('\n'));
  assert.equal(jobIds(live).size, 5);
  const keptWreck = readdirSync(dir).filter((f) => f.startsWith('requests.sqlite.replaced-'));
  assert.equal(keptWreck.length, 1);
  assert.deepEqual(readFileSync(join(dir, keptWreck[0]!)), wrecked, 'the wrecked file is kept as it was');

  // A fresh machine: no live file yet.
  const fresh = tempDir(t);
  const freshEnv = testEnv(fresh);
  const first5 = await cli(freshEnv, fresh, 'restore', backup);
  assert.equal(first5.code, 0, first5.err.join('\n'));
  assert.match(first5.out, new RegExp(`^restored ${freshEnv.PROXY_DB_PATH} from ${backup} \\(5 jobs, \\d+\\.\\d MB, integrity checked\\) in \\d+\\.\\d s$`));
  assert.equal(jobIds(freshEnv.PROXY_DB_PATH as string).size, 5);

  // PROXY_DB_PATH naming a named pipe (or a device): no file of the programs' to put the copy over.
  const pipe = join(fresh, 'pipe');
  execFileSync('mkfifo', [pipe]);
  const ontoPipe = await cli({ ...freshEnv, PROXY_DB_PATH: pipe }, fresh, 'restore', backup);
  assert.deepEqual([ontoPipe.code, ontoPipe.err], [1, [`proxy-worker: restore of ${backup} to ${pipe} failed, nothing was changed: ${pipe} is a named pipe, not a database file`]]);
  assert.ok(statSync(pipe).isFIFO());
});

test("restore run as another user than the live file's owner is refused, changing nothing: the restored file would be that user's", async (t) => {
  if (!onlyOn('sqlite', t, 'replaces the SQLite file')) return;
  if (process.getuid?.() !== 0) return t.skip('running the command as another user needs root');
  const dir = tempDir(t);
  const env = testEnv(dir);
  const live = env.PROXY_DB_PATH as string;
  const backup = await backupOfJobs(env, dir, 1);
  // Everything here is writable by anyone: only the owner check stands in the way.
  chmodSync(dir, 0o777);
  for (const file of readdirSync(dir)) chmodSync(join(dir, file), 0o666);
  const liveBytes = readFileSync(live);
  assert.deepEqual(runAsNobody(WORKER_MAIN, ['restore', backup], env), {
    code: 1,
    stderr: [
      `proxy-worker: restore of ${backup} to ${live} failed, nothing was changed: ${live} belongs to uid 0, and this user is uid ${nobodyUid()}: run restore as its owner (or as root), so that the restored file is the owner's too`,
    ],
  });
  assert.deepEqual(readFileSync(live), liveBytes);
  assert.equal(statSync(live).uid, 0);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('.partial') || f.includes('replaced')),
    [],
  );
});

test('backup or restore onto a disk without room for the copy says so, and changes nothing', async (t) => {
  if (!onlyOn('sqlite', t, 'replaces the SQLite file')) return;
  const mnt = smallDisk(t, '1m');
  if (!mnt) return;
  const dir = tempDir(t);
  // A backup of 2,000 jobs with 1 KB prompts, several MB: more than the small disk holds.
  const backup = await backupOfJobs(testEnv(dir), dir, 2000, 'x'.repeat(1000));
  const tooBig = await cli(testEnv(dir), dir, 'backup', join(mnt, 'b.sqlite'));
  assert.deepEqual(
    [tooBig.code, tooBig.err],
    [
      1,
      [`proxy-worker: backup of ${join(dir, 'requests.sqlite')} to ${join(mnt, 'b.sqlite')} failed: the disk holding ${mnt} has no room for the copy (database or disk is full)`],
    ],
  );
  assert.deepEqual(readdirSync(mnt), []);
  const env = testEnv(dir, { PROXY_DB_PATH: join(mnt, 'requests.sqlite') });
  assert.equal((await cli(env, dir, 'stats')).code, 0);
  const live = readFileSync(env.PROXY_DB_PATH as string);
  const run = await cli(env, dir, 'restore', backup);
  assert.deepEqual(
    [run.code, run.err],
    [1, [`proxy-worker: restore of ${backup} to ${env.PROXY_DB_PATH} failed, nothing was changed: the disk holding ${mnt} has no room for the copy (database or disk is full)`]],
  );
  assert.deepEqual(readFileSync(env.PROXY_DB_PATH as string), live);
  assert.deepEqual(
    readdirSync(mnt).filter((f) => f.includes('.partial') || f.includes('replaced')),
    [],
  );
});
