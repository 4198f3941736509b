import express, { type RequestHandler } from 'express';
import { AppError } from '@proxy/core';
import { sendContinue } from '../expect-continue.js';
import { bodyTooLarge } from './errors.js';

/**
 * Reads a create's body as raw bytes into `req.body` (the signature covers exactly what the client
 * sent). The common case, a plain body with a Content-Length within the limit, is read here; every
 * other case (compressed, chunked, too large) goes to body-parser's raw reader, which knows them all.
 * Why not body-parser for everything: its per-request checks (type, charset, encoding, a stream of
 * its own) cost more than the read itself on this hot path.
 */
export function rawBody(limitBytes: number): RequestHandler {
  const general = express.raw({ type: () => true, limit: limitBytes });
  return (req, res, next) => {
    const length = req.headers['content-length'];
    const encoding = req.headers['content-encoding'];
    const plain = encoding === undefined || encoding.toLowerCase() === 'identity';
    // Refused by its Content-Length before any of it is read: a client that waits for a 100
    // Continue then never sends it (expect-continue.ts).
    if (plain && length !== undefined && Number(length) > limitBytes) throw bodyTooLarge(limitBytes, false);
    if (req.headers.expect !== undefined) sendContinue(res);
    if (length === undefined || !/^\d{1,10}$/.test(length) || !plain) {
      general(req, res, next);
      return;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onAborted);
      req.off('error', onAborted);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    };
    const onEnd = () => {
      cleanup();
      req.body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, received);
      next();
    };
    const onAborted = (err?: unknown) => {
      cleanup();
      next(new AppError('invalid_request', 'the request body could not be read', { cause: err }));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    // 'close' before 'end' is a client that went away mid-body.
    req.on('close', onAborted);
    req.on('error', onAborted);
  };
}
