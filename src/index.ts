import { isMainThread, workerData } from 'node:worker_threads';

// The story of one download is in main.ts; a receive worker of a ranged download re-enters this
// bundle and loads only what it needs.
if (isMainThread) void import('./main.js').then(({ run }) => run());
else
  void import('./transfer/receive-worker.js').then(
    ({ isReceiveSetup, runReceiveWorker }) => isReceiveSetup(workerData) && runReceiveWorker(workerData),
  );
