// The official together-ai SDK's way to download: fineTuning.content() piped to a file.
// Usage: node scripts/bench-sdk.mjs <base-url> <job-id> <checkpoint> <output-file>  (key in TOGETHER_API_KEY)
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Together from 'together-ai';

const [baseURL, jobId, checkpoint, output] = process.argv.slice(2);
const client = new Together({ apiKey: process.env.TOGETHER_API_KEY, baseURL, maxRetries: 2 });
const response = await client.fineTuning.content({ ft_id: jobId, checkpoint });
await pipeline(Readable.fromWeb(response.body), createWriteStream(output));
