import type { ServerResponse } from 'node:http';

/**
 * `Expect: 100-continue`: a client that sends it (curl for a large body, Windows PowerShell's
 * Invoke-WebRequest for every POST) waits for the server's `100 Continue` before it sends the body.
 * Node sends one as soon as it has read the headers, so a create refused on its headers alone (an
 * unknown key, a spent rate limit, a body over BODY_LIMIT by its Content-Length) was refused only
 * after the whole body had crossed the network. proxy-api holds it back (listen.ts) until a route
 * is about to read the body (raw-body.ts): refused before that, the client never sends it, and Node
 * closes the connection, since it cannot know whether the body follows.
 */
const held = new WeakSet<ServerResponse>();

/** Notes that `res`'s client waits for a `100 Continue` before it sends the body. */
export function holdContinue(res: ServerResponse): void {
  held.add(res);
}

/** Sends the `100 Continue` held for `res`, if one is; once. */
export function sendContinue(res: ServerResponse): void {
  if (held.delete(res)) res.writeContinue();
}
