// Preloaded with `node --import` in tests: replaces @actions/tool-cache's 10-20 s sleeps between
// download attempts (the hook the library reads) with TOOL_CACHE_RETRY_SECONDS (default 0), so retry
// scenarios run in milliseconds.
const seconds = Number(process.env.TOOL_CACHE_RETRY_SECONDS ?? 0);
globalThis.TEST_DOWNLOAD_TOOL_RETRY_MIN_SECONDS = seconds;
globalThis.TEST_DOWNLOAD_TOOL_RETRY_MAX_SECONDS = seconds;
