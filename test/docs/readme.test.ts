import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { startStubUpstream } from '../../scripts/stub-upstream.ts';
import { SETTINGS } from '../../packages/core/src/config.ts';
import { ERROR_STATUS } from '../../packages/core/src/errors.ts';
import { buildCli } from '../../apps/worker/src/cli.ts';
import { ROOT, getJson, newCredentials, postSigned, startApiProcess, tempDir, testEnv } from '../helpers/index.ts';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const section = (heading: string) => {
  const start = readme.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README has no ${heading}`);
  const level = heading.split(' ')[0] as string;
  const rest = readme.slice(start + heading.length + 2);
  const end = rest.search(new RegExp(`\\n#{1,${level.length}} `));
  return end < 0 ? rest : rest.slice(0, end);
};
const blocks = (text: string, lang: string) => [...text.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => (m[1] as string).trim());

test('a fresh machine needs exactly two commands, and CI runs the second', () => {
  assert.deepEqual(blocks(section('## On a fresh machine'), 'sh'), ['npm install && npm start', 'npm test']);
  assert.match(readFileSync(join(ROOT, '.ci/run'), 'utf8'), /\nnpm test\n/);
});

test('the configuration table lists every setting the code reads', () => {
  const table = section('## Configuration');
  for (const name of Object.keys(SETTINGS)) assert.ok(table.includes(`\`${name}\``), `${name} is missing from the table`);
});

test('the error table lists every code with its HTTP status', () => {
  const table = section('### Error codes');
  for (const [code, status] of Object.entries(ERROR_STATUS)) assert.match(table, new RegExp(`\\| \`${code}\` \\| ${status} \\|`), code);
});

test("the Worker section's command lists name every proxy-worker command, and no command it does not have", () => {
  // A command added to the CLI and not to these lists would be found by --help alone.
  const listed = new Set(blocks(section('## Worker'), 'sh').flatMap((block) => [...block.matchAll(/^proxy-worker ([a-z-]+)/gm)].map((m) => m[1] as string)));
  const { commands: made } = buildCli('0.0.0');
  const commands = made.flatMap((c) => [c.name(), ...c.aliases()]);
  const primary = made.map((c) => c.name());
  assert.deepEqual(
    primary.filter((name) => !listed.has(name)),
    [],
    'commands the lists leave out',
  );
  assert.deepEqual(
    [...listed].filter((name) => !commands.includes(name)),
    [],
    'listed, but no such command',
  );
});

test("the admin commands' line under Deployment names the units' own settings file, folder and user", () => {
  const [line] = blocks(section('## Deployment'), 'sh').filter((b) => b.includes('--env-file='));
  const said = /^cd (\S+) && sudo -u (\S+) node --env-file=(\S+) apps\/worker\/dist\/main\.js stats$/.exec(line ?? '');
  assert.ok(said, line);
  for (const unit of ['proxy-api.service', 'proxy-worker.service']) {
    const text = readFileSync(join(ROOT, 'scripts/deploy', unit), 'utf8');
    const setting = (name: string) => new RegExp(`^${name}=-?(\\S+)$`, 'm').exec(text)?.[1];
    assert.deepEqual([setting('WorkingDirectory'), setting('User'), setting('EnvironmentFile')], [said[1], said[2], said[3]], unit);
  }
});

test('every link to a heading in README and docs/ names a heading that exists', () => {
  // GitHub's anchors: lower case, punctuation other than '-' and '_' dropped, spaces as hyphens.
  const slug = (heading: string) =>
    heading
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}_\- ]/gu, '')
      .replace(/ /g, '-');
  const headings = (text: string) => new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1] as string)));
  const files = [
    'README.md',
    ...readdirSync(join(ROOT, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const broken: string[] = [];
  for (const file of files) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    for (const [link, target, anchor] of text.matchAll(/\]\(([^)#\s]*)#([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target as string)) continue;
      const path = target ? join(dirname(join(ROOT, file)), target as string) : join(ROOT, file);
      if (!headings(readFileSync(path, 'utf8')).has(anchor as string)) broken.push(`${file}: ${link}`);
    }
  }
  assert.deepEqual(broken, []);
});

test('the JSON examples have exactly the fields the API really returns', async (t) => {
  const dir = tempDir(t);
  const stub = await startStubUpstream();
  t.after(() => stub.close());
  const { key, secret } = newCredentials();
  const { url } = await startApiProcess(t, testEnv(dir, { PROXY_KEY: key, PROXY_SECRET: secret, OPENAI_API_KEY: 'sk-readme', OPENAI_BASE_URL: stub.url }), dir);
  const queued = (await postSigned(url, key, secret, { prompt: 'What is 2+2?' })).json;
  stub.behave(() => ({ status: 400, body: { error: { message: 'Unsupported parameter', type: 'invalid_request_error' } } }));
  const failing = (await postSigned(url, key, secret, { prompt: 'fail' })).json;
  await fetch(`${url}/v1/worker/run`, { method: 'POST', headers: { 'x-proxy-key': key } });
  stub.behave(() => ({}));
  await fetch(`${url}/v1/worker/run`, { method: 'POST', headers: { 'x-proxy-key': key } });
  const failed = (await getJson(url, `/v1/requests/${failing.id}`, key)).json;
  const second = (await postSigned(url, key, secret, { prompt: 'ok' })).json;
  await fetch(`${url}/v1/worker/run`, { method: 'POST', headers: { 'x-proxy-key': key } });
  const completed = (await getJson(url, `/v1/requests/${second.id}`, key)).json;
  assert.deepEqual([queued.status, failed.status, completed.status], ['queued', 'failed', 'completed']);

  const examples = [...blocks(section('### Creating a request'), 'json'), ...blocks(section('### The job'), 'json')].map((b) => JSON.parse(b));
  const real = { queued, failed, completed } as Record<string, Record<string, unknown>>;
  assert.equal(examples.length, 3);
  for (const example of examples) {
    const actual = real[example.status as string];
    assert.ok(actual, `no real ${example.status} job to compare with`);
    assert.deepEqual(Object.keys(example), Object.keys(actual), `the ${example.status} example's fields`);
    if (example.error) assert.deepEqual(Object.keys(example.error), Object.keys(actual.error as object));
    if (example.response) assert.deepEqual(Object.keys(example.response).sort(), Object.keys(actual.response as object).sort());
  }
});
