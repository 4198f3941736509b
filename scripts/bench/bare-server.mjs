/**
 * The baseline for the API figures: a bare Express 5 app on the same machine that parses the same
 * JSON and answers 202 (create) or 200 (lookup), with nothing else. Prints its port. Plain
 * JavaScript, so that neither a TypeScript loader's time nor its memory counts against the proxy.
 * `node bare-server.mjs PORT` serves it as proxy-api serves its app: requests and responses made
 * with Express's prototypes from the start (apps/api/src/express-objects.ts, built), so the swap
 * Express makes on each finds them in place; the targets are read against this. `PORT plain`
 * serves it as `app.listen` does, where each request's swap costs V8 its inline caches.
 */
import { createServer } from 'node:http';
import express from 'express';
import { expressObjects } from '../../apps/api/dist/express-objects.js';

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.post('/bare', express.json({ limit: '1mb' }), (req, res) => {
  res.status(202).json({ id: 'req_bare', status: 'queued', prompt_length: String(req.body.prompt ?? '').length });
});
app.get('/bare/:id', (req, res) => {
  res.json({ id: req.params.id, object: 'proxy.request', status: 'completed', output_text: 'echo' });
});
const plain = process.argv[3] === 'plain';
const server = (plain ? createServer(app) : createServer({ ...expressObjects(app) }, app)).listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
