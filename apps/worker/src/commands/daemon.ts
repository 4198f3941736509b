import { handleStopSignals } from '@proxy/core';
import { setUpWorker } from './setup.js';

/** `proxy-worker daemon`: runs until the first stop signal, then drains and returns. */
export async function runDaemon(): Promise<void> {
  const { logger, worker, storeLost, close } = await setUpWorker();
  const done = worker.runDaemon();
  handleStopSignals(
    logger,
    async () => {
      await worker.stop();
      await done;
      await close();
    },
    { hangUpStops: true, failWhen: storeLost },
  );
  await done;
}
