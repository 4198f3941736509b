import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import { errors as undiciErrors, type Dispatcher } from 'undici';
import type { CallSignal } from './upstream-client.js';

/**
 * An answer's status and headers, and its body: read whole (`bytes`, at most `maxBytes`), handed
 * over as a stream (`body`) when `asStream` chose so from its head, or `failed` while being read
 * whole (over the limit, the connection lost, the call aborted).
 */
export type Answer = { status: number; headers: IncomingHttpHeaders } & ({ bytes: Buffer } | { body: Readable } | { failed: unknown });

export interface ExchangeOptions {
  /** The most bytes an answer read whole may have (0: no limit); past it, or a Content-Length over it, `failed` with ResponseExceededMaxSizeError and the connection closed. */
  maxBytes: number;
  /** Whether an answer with this head is handed over as a stream, to be read and counted by the caller. */
  asStream(status: number, headers: IncomingHttpHeaders): boolean;
}

/**
 * One call through undici's dispatch with a handler of this file's, rather than `request()`: an
 * answer read whole is gathered from its chunks as they arrive, with no body stream, async scope or
 * promise between the socket and the bytes (callgrind: 459,527–465,082 instructions a worker's job
 * against 487,138).
 * The bytes are counted here, not by the pool's maxResponseSize, so that the limit can be on what
 * an answer holds: an event stream, handed over as a stream, is counted by the answer it makes.
 *
 * Rejects when no answer came (the connection failed, the call aborted before its head).
 */
export function exchange(dispatcher: Dispatcher, request: Dispatcher.DispatchOptions, signal: CallSignal, options: ExchangeOptions): Promise<Answer> {
  return new Promise((resolve, reject) => {
    dispatcher.dispatch(request, new AnswerReader(signal, options, resolve, reject));
  });
}

/** The handler: a class, so that a call allocates one object rather than a closure per method. */
class AnswerReader implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private head: { status: number; headers: IncomingHttpHeaders } | null = null;
  private body: Readable | null = null;
  private readonly chunks: Buffer[] = [];
  private total = 0;
  private ended = false;
  // As undici's request() does: a call aborted before it starts is aborted as it starts, and a
  // body being read is destroyed with the signal's reason.
  private readonly onAbort = () => {
    if (this.body) this.body.destroy(this.signal.reason as Error);
    else this.controller?.abort(this.signal.reason as Error);
  };

  constructor(
    private readonly signal: CallSignal,
    private readonly options: ExchangeOptions,
    private readonly resolve: (answer: Answer) => void,
    private readonly reject: (err: unknown) => void,
  ) {
    if ('addEventListener' in signal) signal.addEventListener('abort', this.onAbort, { once: true });
    else signal.once('abort', this.onAbort);
  }

  // undici calls this just before it writes the request, synchronously: a check made here has
  // nothing between it and the send.
  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    this.signal.beforeSend?.();
    if (this.signal.aborted) controller.abort(this.signal.reason as Error);
  }

  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    // 1xx (100 Continue, 103 Early Hints) come before the answer.
    if (status < 200) return;
    this.head = { status, headers };
    this.signal.onHead?.();
    if (!this.options.asStream(status, headers)) {
      // An answer that says it is over the limit fails at once, rather than after the limit's worth
      // of bytes (16 MB by default) has come in and been thrown away.
      if (this.options.maxBytes > 0 && Number(headers['content-length']) > this.options.maxBytes) throw new undiciErrors.ResponseExceededMaxSizeError();
      return;
    }
    this.body = new Readable({
      read: () => controller.resume(),
      // Left unread (the caller stopped early, the call aborted): the connection is closed.
      destroy: (err, done) => {
        if (!this.ended) controller.abort(err ?? new undiciErrors.RequestAbortedError());
        done(err);
      },
    });
    this.resolve({ status, headers, body: this.body });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.body) {
      if (!this.body.push(chunk)) controller.pause();
      return;
    }
    this.total += chunk.length;
    // Thrown, undici aborts the call and closes its connection, as its own limit does.
    if (this.options.maxBytes > 0 && this.total > this.options.maxBytes) throw new undiciErrors.ResponseExceededMaxSizeError();
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    this.end();
    if (this.body) this.body.push(null);
    else this.resolve({ status: this.head!.status, headers: this.head!.headers, bytes: this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.total) });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.end();
    if (this.body) this.body.destroy(err);
    else if (this.head) this.resolve({ status: this.head.status, headers: this.head.headers, failed: err });
    else this.reject(err);
  }

  private end(): void {
    this.ended = true;
    if ('removeEventListener' in this.signal) this.signal.removeEventListener('abort', this.onAbort);
    else this.signal.removeListener('abort', this.onAbort);
  }
}
