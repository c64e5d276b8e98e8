import { ActionError, InputError } from '../errors.js';
import { quote } from '../log.js';

// What can be known about an artifact upload without loading the artifact client, which is
// large: most runs never upload, and those that do learn early that they cannot.

/** True for GitHub Enterprise Server, whose artifact service this client cannot talk to. */
export function isGhes(serverUrl = process.env.GITHUB_SERVER_URL): boolean {
  const host = new URL(serverUrl || 'https://github.com').hostname.toUpperCase();
  return host !== 'GITHUB.COM' && !host.endsWith('.GHE.COM') && !host.endsWith('.LOCALHOST');
}

/** Fails, before any request, when this run has no artifact service to upload to. */
export function requireArtifactService(): void {
  if (!process.env.ACTIONS_RUNTIME_TOKEN || !process.env.ACTIONS_RESULTS_URL) {
    throw new ActionError(
      'Uploading an artifact needs a GitHub Actions workflow run: ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL are not set. Set `upload-artifact: false` when running elsewhere.',
    );
  }
  if (isGhes()) {
    throw new ActionError(
      `Artifact upload is not available on GitHub Enterprise Server (${process.env.GITHUB_SERVER_URL}): this artifact service only exists on github.com and GHE.com. Set \`upload-artifact: false\` and upload the file at the \`path\` output with actions/upload-artifact@v3 instead.`,
    );
  }
}

// The characters GitHub's artifact service refuses in a name.
const ARTIFACT_NAME_FORBIDDEN = /[":<>|*?\\/\r\n]/;

export function parseArtifactName(value: string): string | undefined {
  if (value === '') return undefined;
  const trimmed = value.trim();
  if (trimmed === '') {
    throw new InputError('artifact-name', 'is blank. Give a name, or leave the input out to use the downloaded file name.');
  }
  // An un-zipped artifact is named like a file, and no file can be called `.` or `..`.
  if (trimmed === '.' || trimmed === '..') {
    throw new InputError('artifact-name', `${quote(trimmed)} cannot name an artifact, which is named like a file. Choose another name.`);
  }
  if (ARTIFACT_NAME_FORBIDDEN.test(trimmed)) {
    throw new InputError(
      'artifact-name',
      `${quote(trimmed)} contains a character artifacts cannot have. Do not use any of: " : < > | * ? \\ / carriage return, newline.`,
    );
  }
  return trimmed;
}

/** A default artifact name (the file's) must pass the same rules as one given as input. */
export function requireUsableFileName(name: string): void {
  try {
    parseArtifactName(name);
  } catch {
    throw new InputError(
      'artifact-name',
      `the file name ${JSON.stringify(name)} cannot be an artifact name. Set \`artifact-name\` to a name without " : < > | * ? \\ /.`,
    );
  }
}

/** The service's URL for an artifact, as shown on the run's page. */
export function artifactUrl(id: number, env: NodeJS.ProcessEnv = process.env): string {
  const server = (env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, '');
  return `${server}/${env.GITHUB_REPOSITORY ?? ''}/actions/runs/${env.GITHUB_RUN_ID ?? ''}/artifacts/${id}`;
}
