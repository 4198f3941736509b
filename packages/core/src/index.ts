export * from './errors.js';
export * from './config.js';
export * from './signing.js';
export * from './ids.js';
export * from './schemas.js';
export * from './request-parser.js';
export * from './logger.js';
export * from './log-throttle.js';
export * from './store/index.js';
// The runner is `@proxy/core/runner` (it loads undici); only its types are re-exported here.
export type { RunReport, Worker, RunLimits } from './runner/worker.js';
export * from './clients.js';
export * from './job-view.js';
export * from './unicode.js';
export * from './process/lifecycle.js';
export * from './process/open-files.js';
export * from './clients-file.js';
export * from './rate-spec.js';
export * from './rate-limit.js';
