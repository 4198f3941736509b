/**
 * The baseline for the API figures: a bare Express 5 app on the same machine that parses the same
 * JSON and answers 202 (create) or 200 (lookup), with nothing else. Prints its port. Plain
 * JavaScript, so that neither a TypeScript loader's time nor its memory counts against the proxy.
 */
import express from 'express';

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.post('/bare', express.json({ limit: '1mb' }), (req, res) => {
  res.status(202).json({ id: 'req_bare', status: 'queued', prompt_length: String(req.body.prompt ?? '').length });
});
app.get('/bare/:id', (req, res) => {
  res.json({ id: req.params.id, object: 'proxy.request', status: 'completed', output_text: 'echo' });
});
const server = app.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
