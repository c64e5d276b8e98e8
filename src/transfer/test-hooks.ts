/**
 * Waits that tests shorten. A test preloads a module that sets a global (the way tool-cache reads
 * `TEST_DOWNLOAD_TOOL_RETRY_MIN_SECONDS`); nothing sets one in production, where the defaults hold.
 */
export type HookName = 'PROBE_DEADLINE_MS' | 'MAX_SERVER_WAIT_MS' | 'BACKOFF_BASE_MS' | 'RECEIVE_WORKERS';

export function testHook(name: HookName, fallback: number): number {
  const value = (globalThis as Record<string, unknown>)[`TOGETHER_DOWNLOAD_TEST_${name}`];
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : fallback;
}
