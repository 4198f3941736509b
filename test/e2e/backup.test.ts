import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { WORKER_MAIN, enqueueJob, getJson, newCredentials, onlyOn, openTestStore, postSigned, spawnNode, startApiProcess, startWorkerDaemon, tempDir, testEnv } from '../helpers/index.ts';

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

test('backup while creates stream in and the daemon works: a whole file holding every job stored before it began, which a restored API serves; run again, it replaces the copy whole', async (t) => {
  if (!onlyOn('sqlite', t, 'copies the SQLite file')) return;
  const dir = tempDir(t);
  const stub = await startStubUpstream({ behave: async () => (await new Promise((r) => setTimeout(r, 20)), {}) });
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-backup', OPENAI_BASE_URL: stub.url, RATE_LIMIT_PER_IP: '100000/min', RATE_LIMIT_PER_KEY: '100000/min' });
  const api = await startApiProcess(t, env, dir);
  const worker = startWorkerDaemon(t, env, dir);

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
    assert.equal(Number(/\((\d+) jobs/.exec(backup.out)?.[1]), copied.size, 'the count printed is the copy\'s');
    // Nothing of the copy's making is left beside it.
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('backup')), ['backup.sqlite']);
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

test('backup refuses to write over the live file or its log, even through a link, and names a missing folder; the live file is untouched; a copy gets its permissions; a folder takes the copy under the live name; what a killed backup left is removed', async (t) => {
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
  assert.deepEqual([missing.code, missing.err], [1, [`proxy-worker: backup of ${live} to ${join(dir, 'nowhere', 'b.sqlite')} failed: the folder ${join(dir, 'nowhere')} does not exist`]]);
  assert.equal(jobIds(live).size, 0);
  assert.ok(!existsSync(join(dir, 'nowhere')));

  // The copy gets the live file's permissions, whatever the umask.
  chmodSync(live, 0o600);
  const copied = await cli(env, dir, 'backup', join(dir, 'b.sqlite'));
  assert.equal(copied.code, 0, copied.err.join('\n'));
  assert.equal(statSync(join(dir, 'b.sqlite')).mode & 0o777, 0o600);

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
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.partial')), [`.b.sqlite.${process.pid}.partial`]);
});

test('backup --check: a copy that fails its integrity check leaves the backup before it in place; without --check the same copy replaces it', async (t) => {
  if (!onlyOn('sqlite', t, 'copies the SQLite file')) return;
  const dir = tempDir(t);
  const env = testEnv(dir);
  const store = await openTestStore(env);
  for (let i = 0; i < 50; i++) await enqueueJob(store, `job ${i}`);
  await store.close();
  const target = join(dir, 'b.sqlite');
  assert.equal((await cli(env, dir, 'backup', target)).code, 0);
  const good = readFileSync(target);

  // Damage the live file the way a bad disk or a bug might: two of the jobs table's indexes swapped,
  // so each misses the rows the other holds. VACUUM INTO copies indexes page for page.
  const live = new Database(env.PROXY_DB_PATH as string);
  const [first, second] = live.prepare(`SELECT name, rootpage FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL ORDER BY name LIMIT 2`).all() as Array<{ name: string; rootpage: number }>;
  live.unsafeMode(true);
  live.pragma('writable_schema = ON');
  live.prepare('UPDATE sqlite_schema SET rootpage = ? WHERE name = ?').run(second!.rootpage, first!.name);
  live.prepare('UPDATE sqlite_schema SET rootpage = ? WHERE name = ?').run(first!.rootpage, second!.name);
  live.close();

  const refused = await cli(env, dir, 'backup', target, '--check');
  assert.equal(refused.code, 1);
  assert.equal(refused.err.length, 1);
  assert.match(refused.err[0]!, new RegExp(`^proxy-worker: backup of ${env.PROXY_DB_PATH} to ${target} failed: the copy failed its integrity check, and the target was left as it was: [^;]*index jobs_`));
  assert.deepEqual(readFileSync(target), good, 'the backup before is untouched');
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.partial')), []);
  assert.equal((await cli(env, dir, 'backup', target)).code, 0, 'unchecked, the damaged copy goes through');
  assert.notDeepEqual(readFileSync(target), good);
});

test('backup on PostgreSQL says to use pg_dump', async (t) => {
  if (!onlyOn('postgres', t, 'the SQLite file has its own backup')) return;
  const dir = tempDir(t);
  const refused = await cli(testEnv(dir), dir, 'backup', join(dir, 'b.sqlite'));
  assert.deepEqual([refused.code, refused.err], [1, ['proxy-worker: backup copies the SQLite file; on PostgreSQL use pg_dump (see README, Scaling out)']]);
});
