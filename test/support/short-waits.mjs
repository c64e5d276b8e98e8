// Preloaded with `node --import` in tests: shortens the action's own waits through the globals
// `src/transfer/test-hooks.ts` reads (nothing sets them in production): the probe's deadline per
// attempt (PROBE_DEADLINE_MS, default 1000), the longest wait a server may ask for
// (MAX_SERVER_WAIT_MS, default 200) and the backoff's base (BACKOFF_BASE_MS, default 10).
globalThis.TOGETHER_DOWNLOAD_TEST_PROBE_DEADLINE_MS = Number(process.env.PROBE_DEADLINE_MS ?? 1000);
globalThis.TOGETHER_DOWNLOAD_TEST_MAX_SERVER_WAIT_MS = Number(process.env.MAX_SERVER_WAIT_MS ?? 200);
globalThis.TOGETHER_DOWNLOAD_TEST_BACKOFF_BASE_MS = Number(process.env.BACKOFF_BASE_MS ?? 10);
