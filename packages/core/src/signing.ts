import crypto, { createHash, createHmac, timingSafeEqual } from 'node:crypto';

type OneShotHash = (algorithm: string, data: string | Buffer, outputEncoding: 'buffer' | 'hex') => Buffer | string;
// crypto.hash (Node 20.12 and later): a digest in one call, without a Hash object (about 0.7 µs less a
// call, timed alone). `engines` allows Node 20.10, which lacks it; there createHash does the same.
const hashOnce = (crypto as unknown as { hash?: OneShotHash }).hash;

/**
 * The signing recipe (README, "Security"):
 *  1. serialize the body object without `sign` to JSON text T (any serializer; it ends with `}`);
 *  2. sign = lowercase hex HMAC-SHA256 of T's UTF-8 bytes, keyed by the client's secret;
 *  3. send T with its final `}` replaced by `,"sign":"<sign>"}`.
 * No canonicalization: the bytes the client signed are the bytes the server checks.
 */

/** A signed request's `ts` may differ from the server's clock by this much either way (else `stale_request`). */
export const MAX_CLOCK_SKEW_SECONDS = 300;

/**
 * How long after its create the same signed body can still be accepted: its `ts` may have been
 * MAX_CLOCK_SKEW_SECONDS ahead of the clock then, and is taken until it is as far behind. Its job,
 * which holds its nonce, must be kept at least this long, or the body sent again makes a new job.
 */
export const REPLAY_WINDOW_MS = 2 * MAX_CLOCK_SKEW_SECONDS * 1000;

/** HMAC-SHA256 of `text` as lowercase hex. */
export function hmacHex(secret: string, text: string | Buffer): string {
  return createHmac('sha256', secret).update(text).digest('hex');
}

/** Client side: turns unsigned JSON text T into the signed body to send. */
export function signBodyText(unsignedJson: string, secret: string): string {
  const trimmed = unsignedJson.trimEnd();
  if (!trimmed.endsWith('}')) throw new TypeError('the unsigned body must be a JSON object');
  const sign = hmacHex(secret, trimmed);
  // An empty object has no member before `sign`, so it must not get a comma.
  const separator = /\{\s*$/.test(trimmed.slice(0, -1)) ? '' : ',';
  return `${trimmed.slice(0, -1)}${separator}"sign":"${sign}"}`;
}

/** Client side, for tests and scripts: serializes `body` with JSON.stringify and signs it. */
export function signBody(body: Record<string, unknown>, secret: string): string {
  return signBodyText(JSON.stringify(body), secret);
}

// The signed body must end with the sign member; trailing whitespace is tolerated.
const SIGN_TAIL = /,\s*"sign"\s*:\s*"([^"]*)"\s*\}\s*$/;
const HEX64 = /^[0-9a-fA-F]{64}$/;

/** What the server learns from the raw body: the text T that was signed, and the claimed signature. */
export interface SignedText {
  readonly unsigned: Buffer;
  readonly signature: Buffer;
}

/**
 * Server side, step one: splits the raw body into T and the signature bytes, or returns null when the
 * body does not end with a well-formed `,"sign":"<64 hex>"}`.
 */
export function splitSignedBody(raw: Buffer): SignedText | null {
  // Only the tail matters, and a regex over a megabyte body would be wasted work.
  const tail = raw.subarray(Math.max(0, raw.length - 256)).toString('latin1');
  const m = SIGN_TAIL.exec(tail);
  if (!m || !HEX64.test(m[1] ?? '')) return null;
  const cut = raw.length - (tail.length - m.index);
  const unsigned = Buffer.concat([raw.subarray(0, cut), Buffer.from('}')]);
  return { unsigned, signature: Buffer.from((m[1] as string).toLowerCase(), 'hex') };
}

/** Server side, step two: true when any of `secrets` produced the signature (constant time per secret). */
export function verifySignedText(signed: SignedText, secrets: readonly string[]): boolean {
  let ok = false;
  for (const secret of secrets) {
    const expected = createHmac('sha256', secret).update(signed.unsigned).digest();
    // Lengths are equal by construction (32 bytes each): splitSignedBody admits only 64 hex digits.
    if (expected.length === signed.signature.length && timingSafeEqual(expected, signed.signature)) ok = true;
  }
  return ok;
}

/** SHA-256 digest, used to compare secrets and keys in constant time whatever their length. */
export function sha256(text: string | Buffer): Buffer {
  return hashOnce ? (hashOnce('sha256', text, 'buffer') as Buffer) : createHash('sha256').update(text).digest();
}

/** SHA-256 digest as lowercase hex. */
export function sha256Hex(text: string | Buffer): string {
  return hashOnce ? (hashOnce('sha256', text, 'hex') as string) : createHash('sha256').update(text).digest('hex');
}
