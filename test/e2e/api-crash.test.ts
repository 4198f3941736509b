import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventually, newCredentials, openTestStore, postSigned, startApiProcess, tempDir, testEnv, type TestHooks } from '../helpers/index.ts';

type T = TestHooks & { diagnostic: (msg: string) => void };

// A 202 promises the job is stored: it goes out only after the commit (and, with sync=full, the
// flush) that holds the job. Killing the API with creates in flight must not lose one that was
// answered. (A process kill leaves the operating system's cache intact, so this checks the order of
// commit and answer; what a power cut would take is the flush's part, tested in sqlite-store.test.ts.)
test('kill -9 the API while creates stream in: every create that got its 202 is stored with its prompt', async (t: T) => {
  const dir = tempDir(t);
  const { key, secret } = newCredentials();
  const env = testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, RATE_LIMIT_PER_IP: 'off', RATE_LIMIT_PER_KEY: 'off' });
  const { url, child } = await startApiProcess(t, env, dir);
  const accepted = new Map<string, string>();
  let failed = 0;
  let stop = false;
  const senders = Array.from({ length: 16 }, async (_, sender) => {
    for (let i = 0; !stop; i++) {
      const prompt = `crash ${sender}-${i}`;
      try {
        const answer = await postSigned(url, key, secret, { prompt });
        if (answer.status === 202) accepted.set(answer.json.id as string, prompt);
      } catch {
        // The API died under this request: whether it was stored is unknown, and no 202 promised it.
        failed += 1;
        return;
      }
    }
  });
  await eventually(async () => accepted.size >= 300, 30_000, 5);
  child.kill('SIGKILL');
  stop = true;
  await Promise.all(senders);
  assert.equal((await child.exited).signal, 'SIGKILL');

  const store = await openTestStore(env);
  t.after(() => store.close());
  for (const [id, prompt] of accepted) {
    const job = await store.getJob(id);
    assert.ok(job, `${id} was answered 202 but is not stored`);
    assert.equal(job.status, 'queued');
    assert.equal((job.request.messages.at(-1) as { content?: unknown } | undefined)?.content, prompt);
  }
  const stored = (await store.countByStatus()).queued;
  assert.ok(stored >= accepted.size, `${stored} stored, ${accepted.size} answered`);
  t.diagnostic(`${accepted.size} creates answered 202 before the kill, ${failed} cut off, ${stored} stored`);
});
