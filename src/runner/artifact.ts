import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
// A namespace import, and errors told apart by name: a stand-in for the package (such as
// @github/local-action's) need not export every class this module would name.
import * as artifactClient from '@actions/artifact';
import { ActionError, messageOf } from '../errors.js';
import * as log from '../log.js';
import { renameWithRetry } from '../transfer/rename.js';
import { artifactUrl } from './artifact-service.js';

export interface UploadedArtifact {
  id: number;
  name: string;
  url: string;
  digest: string;
}

/**
 * Uploads `file` as a single un-zipped artifact called `name`. An upload without an archive takes
 * its name from the file, so a different name is given through a hard link in a hidden directory
 * beside the file: no copy of a multi-GB archive.
 */
export async function uploadArtifact(file: string, name: string, sha256: string, retentionDays?: number): Promise<UploadedArtifact> {
  const staging = path.join(path.dirname(file), `.together-download-artifact-${randomBytes(6).toString('hex')}`);
  const staged = path.join(staging, name);
  const needsStaging = path.basename(file) !== name;
  let moved = false;
  try {
    if (needsStaging) {
      await fs.promises.mkdir(staging);
      try {
        await fs.promises.link(file, staged);
      } catch {
        // Some file systems refuse hard links; a rename in the same directory tree is as cheap.
        await fs.promises.rename(file, staged);
        moved = true;
      }
    }
    const source = needsStaging ? staged : file;
    const client = new artifactClient.DefaultArtifactClient();
    const result = await client
      .uploadArtifact(name, [source], path.dirname(source), { skipArchive: true, retentionDays })
      .catch((error: unknown) => {
        throw explainUploadError(error, name);
      });
    if (result.id === undefined)
      throw new ActionError(
        `The artifact service did not return an id for artifact ${name}, so the upload cannot be confirmed. Run the job again; if it persists, set \`upload-artifact: false\` and upload with actions/upload-artifact.`,
      );
    // Ask the service what it stored, rather than trusting the digest computed while sending.
    const stored = await client.getArtifact(name).then(
      (found) => found.artifact.digest,
      (error: unknown) => {
        throw new ActionError(
          `Artifact ${name} was uploaded but could not be read back from the artifact service to confirm its sha256 (${messageOf(error)}). Check the run's artifacts, or run the job again.`,
        );
      },
    );
    const digest = (stored ?? '').replace(/^sha256:/, '').toLowerCase();
    // A runner's artifact service always stores the digest; @github/local-action's stand-in, which
    // is configured by LOCAL_ACTION_ARTIFACT_PATH and nothing else sets, stores none.
    if (digest === '' && process.env.LOCAL_ACTION_ARTIFACT_PATH) {
      log.warning(
        `The local stand-in for the artifact service (LOCAL_ACTION_ARTIFACT_PATH is set) stores no sha256, so artifact ${name} was not checked against the file's sha256 ${sha256}.`,
      );
      return { id: result.id, name, url: artifactUrl(result.id), digest };
    }
    if (digest !== sha256) {
      throw new ActionError(
        `The artifact service reports sha256 ${digest || '(none)'} for artifact ${name}, but the downloaded file's sha256 is ${sha256}. The upload may be corrupt; run the job again.`,
      );
    }
    return { id: result.id, name, url: artifactUrl(result.id), digest };
  } finally {
    if (moved) await renameWithRetry(staged, file);
    if (needsStaging) await fs.promises.rm(staging, { recursive: true, force: true });
  }
}

function explainUploadError(error: unknown, name: string): unknown {
  const message = messageOf(error);
  if (error instanceof Error && error.name === 'GHESNotSupportedError') {
    return new ActionError(`Artifact upload is not available on GitHub Enterprise Server. Set \`upload-artifact: false\`. (${message})`);
  }
  // The client wraps its UsageError in a plain Error, so only the message tells a full quota.
  if (/storage quota|insufficient usage/i.test(message)) {
    return new ActionError(
      `The artifact storage quota of this account is full, so artifact ${name} could not be uploaded. Delete old artifacts, lower \`retention-days\`, or raise the storage limit in the billing settings. The downloaded file is kept at the \`path\` output.`,
    );
  }
  if (/\(409\)|conflict|already exists/i.test(message)) {
    return new ActionError(
      `An artifact named ${name} already exists in this workflow run (HTTP 409 Conflict). Set \`artifact-name\` to a name that is unique in the run, for example one that includes the step or the matrix values. The downloaded file is kept at the \`path\` output.`,
    );
  }
  return new ActionError(`Uploading artifact ${name} failed: ${message}. The downloaded file is kept at the \`path\` output.`, {
    cause: error,
  });
}
