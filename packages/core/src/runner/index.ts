// The runner (claim → upstream call → record) is its own entry point, `@proxy/core/runner`, so a
// process that never calls upstream (proxy-api without a key, the admin commands) never loads undici.
export * from './upstream-client.js';
export * from './retry-policy.js';
export * from './pacing.js';
export * from './process-job.js';
export * from './worker.js';
