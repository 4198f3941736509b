import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readPasswordFile } from '../src/store/postgres/password-file.ts';

const target = { host: 'db.internal', port: '5432', database: 'jobs', user: 'app' };

function withFile(text: string, fn: (file: string) => void, mode = 0o600): void {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-pgpass-'));
  try {
    const file = join(dir, 'pgpass');
    writeFileSync(file, text);
    chmodSync(file, mode);
    fn(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("libpq's password file: the first line whose host, port, database and user match gives the password; * matches anything, \\ escapes : and \\, # starts a comment", () => {
  const lines = [
    '# db.internal:5432:jobs:app:commented-out',
    'other:5432:jobs:app:wrong-host',
    'db.internal:6432:jobs:app:wrong-port',
    'db.internal:5432:jobs:app:first\\:of\\\\two:ignored-after-an-unescaped-colon',
    'db.internal:5432:jobs:app:second',
  ];
  withFile(lines.join('\r\n'), (file) => assert.deepEqual(readPasswordFile(file, target), { password: 'first:of\\two' }));
  withFile('*:*:*:app:any-host\n', (file) => assert.deepEqual(readPasswordFile(file, target), { password: 'any-host' }));
  withFile('db.internal:*:jobs:a\\:pp:escaped-user\n', (file) => assert.deepEqual(readPasswordFile(file, { ...target, user: 'a:pp' }), { password: 'escaped-user' }));
  withFile('db.internal:5432:jobs:app2:no\n', (file) => assert.deepEqual(readPasswordFile(file, target), {}));
  // No port is 5432; a connection through the default socket folder, or to no host, is localhost.
  withFile('localhost:5432:jobs:app:local\n', (file) => {
    for (const host of ['', '/var/run/postgresql', '/run/postgresql/', '/tmp'])
      assert.deepEqual(readPasswordFile(file, { ...target, host, port: '' }), { password: 'local' }, host);
    assert.deepEqual(readPasswordFile(file, { ...target, host: '/srv/pg' }), {});
  });
  withFile('/srv/pg:5432:jobs:app:own-folder\n', (file) => assert.deepEqual(readPasswordFile(file, { ...target, host: '/srv/pg' }), { password: 'own-folder' }));
});

test(
  'a password file others may read, or that is not a plain file, is not read, and says so; a missing one says nothing',
  { skip: process.platform === 'win32' && 'libpq checks no permissions on Windows' },
  () => {
    withFile(
      '*:*:*:*:open-to-all\n',
      (file) => {
        assert.deepEqual(readPasswordFile(file, target), {
          note: `password file ${file} has group or world access, and is not read: permissions should be u=rw (0600) or less, as libpq has them`,
        });
      },
      0o640,
    );
    const dir = mkdtempSync(join(tmpdir(), 'proxy-pgpass-'));
    try {
      mkdirSync(join(dir, 'folder'));
      assert.deepEqual(readPasswordFile(join(dir, 'folder'), target), { note: `password file ${join(dir, 'folder')} is not a plain file, and is not read` });
      assert.deepEqual(readPasswordFile(join(dir, 'missing'), target), {});
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
