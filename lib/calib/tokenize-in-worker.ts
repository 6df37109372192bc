/**
 * Tokenizing a whole evaluation text is seconds of synchronous pure-JS BPE: on the main thread it
 * held off Ctrl-C (and every other event) until it finished. In a worker the caller's thread stays
 * free, and an abort terminates the worker at once.
 */
import { Worker } from 'node:worker_threads';

import { AbortedError, fromNativeError } from '../errors.js';
import { throwIfAborted } from '../progress.js';

export async function tokenizeInWorker(
  modelDir: string,
  text: string,
  options: { addSpecialTokens: boolean; signal?: AbortSignal },
): Promise<Int32Array> {
  throwIfAborted(options.signal);
  const worker = new Worker(new URL('./tokenize-worker.js', import.meta.url), {
    workerData: { modelDir, text, addSpecialTokens: options.addSpecialTokens },
  });
  const signal = options.signal;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<Int32Array>((resolve, reject) => {
      onAbort = () => reject(new AbortedError('aborted by the caller'));
      signal?.addEventListener('abort', onAbort, { once: true });
      worker.once('message', (m: { ids?: Int32Array; error?: { message: string; code?: unknown; stack?: string } }) => {
        if (m.ids) return resolve(m.ids);
        // An AwqError comes back as its class (by code); anything else as a plain Error.
        const err = Object.assign(new Error(m.error!.message), { code: m.error!.code });
        if (m.error!.stack) err.stack = m.error!.stack;
        reject(fromNativeError(err));
      });
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the tokenizer worker exited with code ${code} before it answered`)));
    });
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    await worker.terminate();
  }
}
