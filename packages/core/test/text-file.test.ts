import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { decodeText, jsonErrorPlace, readTextFileLater } from '../src/text-file.ts';

test('decodeText reads UTF-8 with or without a byte-order mark, and UTF-16 of either order by its mark', () => {
  const text = 'OPENAI_API_KEY=sk-ü\r\nPROXY_KEY=k\n';
  assert.equal(decodeText(Buffer.from(text, 'utf8')), text);
  assert.equal(decodeText(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')])), text);
  assert.equal(decodeText(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')])), text);
  assert.equal(decodeText(Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(text, 'utf16le').swap16()])), text);
  assert.equal(decodeText(Buffer.alloc(0)), '');
});

test('jsonErrorPlace names the line and column where JSON.parse stopped, never the text around it', () => {
  const place = (text: string) => {
    try {
      JSON.parse(text);
    } catch (err) {
      return jsonErrorPlace(text, err);
    }
    throw new Error('parsed');
  };
  assert.equal(place('[\n  {"name": "a",, }\n]'), ' at line 2, column 16: expected double-quoted property name');
  assert.equal(place('[\n  {"name": "a"'), " at line 2, column 15: expected ',' or '}' after property value");
  // V8 quotes the text around an unexpected token: nothing of it is kept.
  assert.equal(place('["sk-123",]'), '');
  assert.equal(jsonErrorPlace('abc', new Error('Unexpected token s in JSON at position 1')), ' at line 1, column 2');
});

test('readTextFileLater reads a named pipe without blocking: what its writer wrote once the writer closes it, in turns; with no writer, a refusal after the wait', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'text-pipe-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pipe = join(dir, 'clients.json');
  execFileSync('mkfifo', [pipe]);
  // A writer that comes late, writes in two pieces (the first with a byte-order mark) and closes.
  const writer = spawn('sh', ['-c', `sleep 0.2; { printf '\\357\\273\\277[{"a"'; sleep 0.2; printf ':1}]'; } > '${pipe}'`]);
  t.after(() => writer.kill('SIGKILL'));
  assert.equal(await readTextFileLater(pipe, 5000), '[{"a":1}]');

  const started = Date.now();
  await assert.rejects(readTextFileLater(pipe, 300), { message: 'no program wrote the named pipe in 0.3 s' });
  assert.ok(Date.now() - started >= 300);
  assert.equal(await readTextFileLater(fileURLToPath(import.meta.url)).then((text) => text.includes('readTextFileLater')), true, 'a regular file is read as ever');
});
