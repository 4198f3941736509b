/**
 * Bodies sent in a content-encoding, though the worker asks for none (`accept-encoding: identity`):
 * a whole body decoded off the event loop, a stream inflated as it arrives, neither past
 * UPSTREAM_RESPONSE_LIMIT once inflated.
 */
import { promisify } from 'node:util';
import { Readable, pipeline, type Transform } from 'node:stream';
import { brotliDecompress, createBrotliDecompress, createGunzip, createInflate, createInflateRaw, gunzip, inflate, inflateRaw } from 'node:zlib';

/** A body its content-encoding leaves unreadable; `final` when the worker has no decoder for it. */
export class UnreadableBody extends Error {
  constructor(
    message: string,
    readonly final: boolean,
  ) {
    super(message);
  }
}

const unzip = promisify(gunzip);
const unzlib = promisify(inflate);
const unzlibRaw = promisify(inflateRaw);
export const isTooLarge = (err: unknown) => (err as { code?: unknown })?.code === 'ERR_BUFFER_TOO_LARGE';
const DECODERS: Record<string, (bytes: Buffer, options: { maxOutputLength?: number }) => Promise<Buffer>> = {
  gzip: unzip,
  'x-gzip': unzip,
  // HTTP's deflate is zlib-wrapped; some servers send the bare stream instead. One that inflates
  // past the limit is too large either way.
  deflate: (bytes, o) =>
    unzlib(bytes, o).catch((err: unknown) => {
      if (isTooLarge(err)) throw err;
      return unzlibRaw(bytes, o);
    }),
  br: promisify(brotliDecompress),
};

/** Each coding of a Content-Encoding header, as sent (identity left out). */
function codingsOf(encoding: string): string[] {
  return encoding
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
}

/**
 * The one coding a stream can be inflated in as it arrives: null for none, undefined when there are
 * more (or one without a decoder here), which is read whole.
 */
export function codingOf(encoding: string | string[] | undefined): string | null | undefined {
  if (encoding === undefined) return null;
  const codings = codingsOf(String(encoding));
  if (codings.length === 0) return null;
  return codings.length === 1 && codings[0]! in INFLATERS ? codings[0] : undefined;
}

/** Decoders that inflate piece by piece, made once the first piece is in (deflate's kind is told by it). */
const INFLATERS: Record<string, (first: Buffer) => Transform> = {
  gzip: () => createGunzip(),
  'x-gzip': () => createGunzip(),
  br: () => createBrotliDecompress(),
  // Zlib-wrapped, as HTTP says, when its first two bytes are a zlib header; else the bare stream
  // some servers send (DECODERS tries one, then the other, on a whole body).
  deflate: (first) => (first.length >= 2 && (first[0]! & 0x0f) === 8 && ((first[0]! << 8) | first[1]!) % 31 === 0 ? createInflate() : createInflateRaw()),
};

/**
 * A compressed stream's bytes, inflated as they arrive. Before, a compressed stream was read whole
 * and then inflated up to UPSTREAM_RESPONSE_LIMIT: its events, about 30 times the answer they carry
 * in OpenAI's shape, failed as too large while the answer was well under the limit. Bytes that do
 * not inflate (or a stream cut mid-block) are an unreadable body; the body's own failure (the
 * connection lost, the call aborted) is thrown as it is.
 */
export async function* inflated(body: Readable, coding: string): AsyncGenerator<Buffer> {
  const pieces = body[Symbol.asyncIterator]();
  const first = await pieces.next();
  if (first.done) return;
  const inflater = INFLATERS[coding]!(first.value as Buffer);
  // Held in an object: a thrown value may be anything, a falsy one too. (Set in the generator below,
  // which TypeScript does not follow, hence the cast.)
  let bodyFailed = null as { error: unknown } | null;
  const source = Readable.from(
    (async function* () {
      yield first.value as Buffer;
      try {
        for (let next = await pieces.next(); !next.done; next = await pieces.next()) yield next.value as Buffer;
      } catch (err) {
        bodyFailed = { error: err };
        throw err;
      }
    })(),
    { objectMode: false },
  );
  pipeline(source, inflater, () => undefined);
  let whole = false;
  try {
    yield* inflater;
    whole = true;
  } catch (err) {
    if (bodyFailed) throw bodyFailed.error;
    throw new UnreadableBody(`with a stream that does not decode as content-encoding ${coding}`, false);
  } finally {
    // Left unread (the answer over the limit, the call aborted): its connection is closed, as a
    // plain stream's is when its loop ends early.
    if (!whole) body.destroy();
  }
}

/**
 * The text of a body sent with a content-encoding: codings undone last first, off the event loop,
 * and never past `maxBytes` (0: no limit) once inflated (a small body can inflate a thousandfold).
 * exchange() counts the bytes as sent, so the limit applies to both. Only a server that ignores our
 * `accept-encoding: identity` sends one: thrown away as unreadable, each answer had been paid for,
 * and each retry was paid again (measured: five calls for one job, none read).
 */
export async function decodeBody(bytes: Buffer, encoding: string, maxBytes: number): Promise<string> {
  const codings = codingsOf(encoding);
  let decoded = bytes;
  for (const coding of codings.reverse()) {
    const decode = DECODERS[coding];
    if (!decode) throw new UnreadableBody(`in content-encoding ${coding}, which the worker cannot read`, true);
    try {
      decoded = await decode(decoded, maxBytes > 0 ? { maxOutputLength: maxBytes } : {});
    } catch (err) {
      if (isTooLarge(err)) throw err;
      throw new UnreadableBody(`with a body that does not decode as content-encoding ${coding}`, false);
    }
  }
  // As undici's text(): UTF-8, a byte-order mark dropped.
  return new TextDecoder().decode(decoded);
}
