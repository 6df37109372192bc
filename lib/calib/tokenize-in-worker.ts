/**
 * Tokenizing a whole evaluation text is seconds of synchronous pure-JS BPE: on the main thread it
 * held off Ctrl-C (and every other event) until it finished. In a worker the caller's thread stays
 * free, and an abort terminates the worker at once.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { AbortedError, type AwqError, awqErrorClass, BadCheckpointError, InternalError, OutOfMemoryError } from '../errors.js';
import { throwIfAborted } from '../progress.js';
import type { WorkerErrorReport } from './tokenize-worker.js';

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
      worker.once('message', (m: { ids?: Int32Array; error?: WorkerErrorReport }) => {
        if (m.ids) return resolve(m.ids);
        reject(typedError(m.error!, modelDir));
      });
      // Uncaught in the worker (outside its try: loading its modules) or its heap limit.
      worker.once('error', (err) => {
        const message = `the tokenizer worker failed: ${err.message}`;
        const oom = (err as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY';
        reject(oom ? new OutOfMemoryError(message, { cause: err }) : new InternalError(message, { cause: err }));
      });
      worker.once('exit', (code) => reject(new InternalError(`the tokenizer worker exited with code ${code} before it answered`)));
    });
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    await worker.terminate();
  }
}

/**
 * The caller's error for what the worker reported: an AwqError comes back as its class (by code)
 * with its message; anything else (the tokenizer library failing on the text) as a
 * BadCheckpointError naming tokenizer.json and keeping the original name and message. Either way
 * the cause is the worker's error, rebuilt from the report (name, message, code, stack, causes).
 */
function typedError(report: WorkerErrorReport, modelDir: string): AwqError {
  const cause = revive(report);
  const Ctor = awqErrorClass(report.code);
  if (Ctor) return new Ctor(report.message, { cause });
  const what = report.name ? `${report.name}: ${report.message}` : report.message;
  return new BadCheckpointError(`${join(modelDir, 'tokenizer.json')}: the tokenizer failed (${what})`, { cause });
}

function revive(report: WorkerErrorReport): Error {
  const err = new Error(report.message, report.cause ? { cause: revive(report.cause) } : undefined);
  if (report.name !== undefined) err.name = report.name;
  if (report.code !== undefined) Object.assign(err, { code: report.code });
  // Where the worker had no stack (a thrown non-Error), not the caller's: it would point here.
  err.stack = report.stack ?? `${report.name ?? 'Error'}: ${report.message}`;
  return err;
}
