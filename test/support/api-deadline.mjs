// Preloaded with `node --import` in tests: shortens the deadline of each Together API attempt (head
// and body; 60 s in use) to API_DEADLINE_MS (default 1500), through the global the action reads, so
// that a trickling server fails in seconds. No environment variable of a workflow can do this.
globalThis.TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS = Number(process.env.API_DEADLINE_MS ?? 1500);
