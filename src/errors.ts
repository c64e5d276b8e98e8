/**
 * An error whose message is written for the person reading the workflow log: it says what went
 * wrong and what to change. `run()` prints it as it is, without a stack trace.
 */
export class ActionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ActionError';
  }
}

/** An input that fails validation; the message always starts with the input's name. */
export class InputError extends ActionError {
  constructor(
    readonly input: string,
    problem: string,
  ) {
    super(`Input \`${input}\`: ${problem}`);
    this.name = 'InputError';
  }
}

/** The text of anything thrown, Error or not. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}
