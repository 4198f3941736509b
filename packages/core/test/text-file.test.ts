import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeText, jsonErrorPlace } from '../src/text-file.ts';

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
