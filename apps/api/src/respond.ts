import type { Response } from 'express';

/**
 * Every JSON answer the API sends goes through here, errors included. It writes what res.json ends
 * up sending (the same Content-Type and Content-Length; a HEAD request gets the headers only, as
 * Node drops its body) without the settings lookups and header bookkeeping of res.json and res.send.
 * Measured (AMD EPYC, profile.ts pinned, three alternating pairs): lookups 112-118 µs of the API's
 * CPU against 123-135 with res.json, creates 193-198 against 201-209.
 */
export function sendJson(res: Response, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}
