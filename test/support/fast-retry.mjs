// Preloaded with `node --import` in tests: removes @actions/tool-cache's 10-20 s sleeps between
// download attempts (the hook the library reads), so retry scenarios run in milliseconds.
globalThis.TEST_DOWNLOAD_TOOL_RETRY_MIN_SECONDS = 0;
globalThis.TEST_DOWNLOAD_TOOL_RETRY_MAX_SECONDS = 0;
