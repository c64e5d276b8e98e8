// Preloaded with `node --import`: the ranged download receives on RECEIVE_WORKERS (default 1)
// worker threads, through the global `src/transfer/test-hooks.ts` reads; for tests and the benchmark.
globalThis.TOGETHER_DOWNLOAD_TEST_RECEIVE_WORKERS = Number(process.env.RECEIVE_WORKERS ?? 1);
