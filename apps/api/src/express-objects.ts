import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';

/** The server options that make Node create each request and response with `app`'s own prototypes. */
export interface ExpressObjects {
  IncomingMessage: typeof IncomingMessage;
  ServerResponse: typeof ServerResponse;
}

/**
 * Express gives each request and response its app's prototype as it enters the app
 * (`Object.setPrototypeOf(req, app.request)`, and the same for `res`). Changing an object's
 * prototype makes V8 move it to a new hidden class and throws away what its inline caches learned
 * of both, so every property read after it takes the slow path. Made with those prototypes from the
 * start, the swap finds them in place and changes nothing (expressjs/express#5998). Measured with the
 * bench's bare Express route (`BARE=1 PIN=1 profile.ts`, AMD EPYC, two runs each): 140–143 µs of
 * CPU a create against 45–49 served this way, 628,376 instructions a create against 166,165.
 *
 * Node's own IncomingMessage and ServerResponse are plain functions, called here on the object that
 * `new` made. Should a later Node make them classes, which cannot be called so, this returns null
 * and requests take Express's own path again: slower, never broken (a test says which path runs).
 * `Reflect.construct` would work on either, but measured slower than Express's swap (188–191 µs).
 */
export function expressObjects(app: Express): ExpressObjects | null {
  if (isClass(IncomingMessage) || isClass(ServerResponse)) return null;
  const Incoming = IncomingMessage as unknown as (this: IncomingMessage, socket: Socket) => void;
  const Response = ServerResponse as unknown as (this: ServerResponse, req: IncomingMessage, options?: object) => void;
  function Request(this: IncomingMessage, socket: Socket) {
    Incoming.call(this, socket);
  }
  Request.prototype = app.request;
  function Reply(this: ServerResponse, req: IncomingMessage, options?: object) {
    Response.call(this, req, options);
  }
  Reply.prototype = app.response;
  // V8 sizes a constructor's objects by the properties its constructor and those it inherits from
  // assign. Without these, a response was sized for none: Node's ~40 fields went to a side array,
  // its symbol-keyed ones past 12 made V8 turn it into a dictionary, and every read of it took a slow
  // lookup (a lookup 331,167 instructions against 277,235, a create 515,306 against 461,362).
  Object.setPrototypeOf(Request, IncomingMessage);
  Object.setPrototypeOf(Reply, ServerResponse);
  return { IncomingMessage: Request as unknown as typeof IncomingMessage, ServerResponse: Reply as unknown as typeof ServerResponse };
}

function isClass(fn: unknown): boolean {
  return typeof fn !== 'function' || Function.prototype.toString.call(fn).startsWith('class');
}
