import { handleStopSignals } from '@proxy/core';
import { setUpWorker } from './setup.js';

/** `proxy-worker once`: drains what is due (within the limits), then returns. */
export async function runOnce(limits: { maxJobs?: number; maxSeconds?: number }): Promise<void> {
  const { logger, worker, storeLost, close } = await setUpWorker();
  handleStopSignals(
    logger,
    async () => {
      await worker.stop();
    },
    { hangUpStops: true, failWhen: storeLost },
  );
  const report = await worker.runOnce(limits);
  logger.info('worker pass done', { ...report });
  await close();
}
