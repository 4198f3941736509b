import { AppError, splitSignedBody, verifySignedText, type ClientIdentity } from '@proxy/core';

const utf8 = new TextDecoder('utf-8', { fatal: true });
// Nesting deeper than this is no chat request; refusing it keeps every later JSON walk cheap and safe.
const MAX_DEPTH = 64;

/**
 * Turns a raw create body into the parsed object, after checking it is UTF-8 JSON whose bytes the
 * client signed with one of its secrets. Order matters: bad JSON is a 400, a bad signature a 401.
 */
export function readSignedBody(raw: unknown, client: ClientIdentity): Record<string, unknown> {
  if (!Buffer.isBuffer(raw) || raw.length === 0) throw new AppError('invalid_json', 'the request body is empty; send a signed JSON object');
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw new AppError('invalid_json', 'the request body is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new AppError('invalid_json', 'the request body is not valid JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new AppError('invalid_request', 'the body must be a JSON object');
  }
  if (depthExceeds(parsed, MAX_DEPTH)) throw new AppError('invalid_request', `the body is nested deeper than ${MAX_DEPTH} levels`);
  const signed = splitSignedBody(raw);
  if (!signed) throw new AppError('invalid_signature', 'the body must end with ,"sign":"<64 hex digits>"} (see the signing recipe)');
  if (!verifySignedText(signed, client.secrets)) {
    // The decoder drops a leading byte-order mark, so the JSON reads; the signature covers the bytes.
    const marked = raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf;
    throw new AppError(
      'invalid_signature',
      marked
        ? 'the signature does not match the body, which begins with a UTF-8 byte-order mark (EF BB BF) that the signature covers: send the signed text without it'
        : 'the signature does not match the body',
    );
  }
  return parsed as Record<string, unknown>;
}

function depthExceeds(root: object, max: number): boolean {
  // Iterative, so a hostile body cannot exhaust the stack here.
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop() as [unknown, number];
    if (depth > max) return true;
    if (value && typeof value === 'object') for (const child of Object.values(value)) if (child && typeof child === 'object') stack.push([child, depth + 1]);
  }
  return false;
}
