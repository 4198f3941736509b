import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StreamTooLarge, assembleStream, createStreamAssembler, streamedRequest } from '../src/runner/event-stream.ts';

// A stream arrives in pieces cut anywhere: inside a line, between a CRLF's CR and LF, inside a
// multi-byte character's UTF-16 pair. What it comes to must not depend on where.
const chunk = (delta: object, finish: string | null = null) =>
  JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta, finish_reason: finish }] });
// One event's data in two lines (JSON allows the line break the SSE rules join them with): a line
// end taken for two would end that event early, half of it.
const split = chunk({ content: '🍀.' });
const twoLines = [`data: ${split.slice(0, split.indexOf('"choices"'))}`, `data: ${split.slice(split.indexOf('"choices"'))}`];
const sample = [
  ': keep-alive',
  '',
  `data: ${chunk({ role: 'assistant', content: '' })}`,
  '',
  `data:${chunk({ content: 'Vier – 四 ' })}`,
  '',
  'event: message',
  ...twoLines,
  '',
  `data: ${chunk({}, 'stop')}`,
  '',
  'data: [DONE]',
  '',
  '',
];
const expected = {
  id: 'c1',
  object: 'chat.completion',
  created: 1,
  model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Vier – 四 🍀.' }, logprobs: null, finish_reason: 'stop' }],
  usage: null,
};

for (const [name, eol] of [
  ['LF', '\n'],
  ['CRLF', '\r\n'],
  ['CR', '\r'],
] as const) {
  test(`a stream with ${name} line ends reads the same cut in two at every place, and given a character at a time`, () => {
    const text = sample.join(eol);
    assert.deepEqual(assembleStream(text), { ok: true, body: expected });
    for (let at = 0; at <= text.length; at++) {
      const assembler = createStreamAssembler();
      assembler.push(text.slice(0, at));
      assembler.push(text.slice(at));
      assert.deepEqual(assembler.end(), { ok: true, body: expected }, `cut at ${at}`);
    }
    const assembler = createStreamAssembler();
    for (const c of text) assembler.push(c);
    assert.deepEqual(assembler.end(), { ok: true, body: expected });
  });
}

test('a data field split over lines is one event; a last event without its blank line still counts', () => {
  const body = JSON.stringify({ id: 'c', choices: [{ index: 0, delta: { content: 'two\nlines' }, finish_reason: 'stop' }] });
  const [head, tail] = [body.slice(0, 20), body.slice(20)];
  const out = assembleStream(`data: ${head}\ndata: ${tail}\n\ndata: [DONE]`);
  // The SSE rules join a field's lines with a line break, which JSON between tokens allows.
  assert.equal(out.ok && (out.body.choices as Array<{ message: { content: string } }>)[0]?.message.content, 'two\nlines');
});

test('logprobs and a list of content parts are joined in order; a role or a finish reason is taken as sent', () => {
  const piece = (delta: object, logprobs: object | null, finish: string | null = null) =>
    `data: ${JSON.stringify({ choices: [{ index: 0, delta, logprobs, finish_reason: finish }] })}\n\n`;
  const out = assembleStream(
    piece({ role: 'assistant', content: [{ type: 'thinking', thinking: [{ type: 'text', text: 'hm' }] }] }, { content: [{ token: 'a', logprob: -1 }] }) +
      piece({ content: 'The ' }, { content: [{ token: 'b', logprob: -2 }] }) +
      piece({ content: [{ type: 'text', text: 'end' }] }, null, 'length'),
  );
  assert.deepEqual(out.ok && out.body.choices, [
    {
      index: 0,
      message: {
        role: 'assistant',
        content: [
          { type: 'thinking', thinking: [{ type: 'text', text: 'hm' }] },
          { type: 'text', text: 'The ' },
          { type: 'text', text: 'end' },
        ],
      },
      logprobs: {
        content: [
          { token: 'a', logprob: -1 },
          { token: 'b', logprob: -2 },
        ],
      },
      finish_reason: 'length',
    },
  ]);
});

test('lines that are no field of the stream are read as an error only when they are one and the stream failed; otherwise passed over', () => {
  const error = JSON.stringify({ error: { code: 503, message: 'overloaded', status: 'UNAVAILABLE' } }, null, 2);
  const start = `data: ${chunk({ role: 'assistant', content: 'Hal' })}\n\n`;
  // Cut short after them: the error, whole.
  assert.deepEqual(assembleStream(`${start}${error}\n`), { ok: true, body: JSON.parse(error) });
  // In a list of one, as Google's error statuses carry it.
  assert.deepEqual(assembleStream(`${start}[${error}]\n`), { ok: true, body: JSON.parse(error) });
  // Not an error, not JSON, or past what is kept: the stream's own verdict.
  const cut = { ok: false, message: 'with a stream that ended before its end' };
  assert.deepEqual(assembleStream(`${start}{"note": "hello"}\n`), cut);
  assert.deepEqual(assembleStream(`${start}<html>busy</html>\n`), cut);
  assert.deepEqual(assembleStream(`${start}${'x'.repeat(20_000)}\n${error}\n`), cut);
  // A stream that ended whole keeps its answer.
  const whole = assembleStream(`${start}${error}\ndata: ${chunk({}, 'stop')}\n\ndata: [DONE]\n\n`);
  assert.equal(whole.ok && (whole.body.choices as Array<{ message: { content: string } }>)[0]?.message.content, 'Hal');
  // id and retry are fields of the stream, not stray.
  assert.deepEqual(assembleStream('id: 1\nretry: 10\n'), { ok: false, message: 'with an empty stream' });
});

test('the limit holds the answer, and an event still arriving, to maxBytes', () => {
  const events = (n: number) => Array.from({ length: n }, () => `data: ${chunk({ content: 'abcd' })}\n\n`).join('') + `data: ${chunk({}, 'stop')}\n\ndata: [DONE]\n\n`;
  // 100 pieces of 4 bytes: 400 bytes of answer, in about 11 KB of events.
  assert.equal(events(100).length > 10_000, true);
  assert.equal(assembleStream(events(100), 400).ok, true);
  assert.throws(() => assembleStream(events(101), 400), StreamTooLarge);
  assert.throws(() => createStreamAssembler(400).push(`data: ${'x'.repeat(401)}`), StreamTooLarge, 'a line not yet ended');
  assert.throws(() => createStreamAssembler(400).push(`data: ${'x'.repeat(300)}\ndata: ${'x'.repeat(300)}\n`), StreamTooLarge, 'an event not yet ended');
  assert.throws(() => createStreamAssembler(400).push(`: ping\ndata: ${'x'.repeat(401)}`), StreamTooLarge, 'a line not yet ended, after a line that has');
  assert.throws(() => createStreamAssembler(400).push(`data: ${'x'.repeat(250)}\ndata: ${'x'.repeat(250)}`), StreamTooLarge, 'an event and its line not yet ended');
});

test('streamedRequest adds stream and stream_options at the front, the rest as it was', () => {
  const request = { model: 'm', messages: [{ role: 'user', content: 'q' }] };
  assert.deepEqual(JSON.parse(streamedRequest(JSON.stringify(request))), { stream: true, stream_options: { include_usage: true }, ...request });
  assert.deepEqual(JSON.parse(streamedRequest(' {}')), { stream: true, stream_options: { include_usage: true } });
});

test('a function call, as answered to the deprecated functions parameter, is joined as a tool call is: the name as sent, the arguments end to end', () => {
  const piece = (delta: object, finish: string | null = null) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  const out = assembleStream(
    piece({ role: 'assistant', content: null, function_call: { name: 'add', arguments: '' } }) +
      piece({ function_call: { arguments: '{"a":' } }) +
      piece({ function_call: { arguments: '2}' } }, 'function_call') +
      'data: [DONE]\n\n',
  );
  assert.deepEqual(out.ok && out.body.choices, [
    { index: 0, message: { role: 'assistant', content: null, function_call: { name: 'add', arguments: '{"a":2}' } }, logprobs: null, finish_reason: 'function_call' },
  ]);
});
