/**
 * Worker of `tokenizeInWorker`: tokenizes one text with a model folder's tokenizer and posts the
 * ids (transferred), or a report of the error (`WorkerErrorReport`), which the caller turns back
 * into its class with the report as its cause.
 */
import { parentPort, workerData } from 'node:worker_threads';

import { loadTokenizer } from './tokenizer.js';

/**
 * An error as the worker saw it, in plain fields: a structured clone keeps neither an error's
 * class nor its `code`. `cause` follows the error's own causes (a few levels).
 */
export interface WorkerErrorReport {
  /** Absent when what was thrown is not an Error. */
  name?: string;
  message: string;
  code?: string | number;
  stack?: string;
  cause?: WorkerErrorReport;
}

function report(err: unknown, depth = 0): WorkerErrorReport {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as { code?: unknown }).code;
  return {
    name: err.name,
    message: err.message,
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    ...(typeof err.stack === 'string' ? { stack: err.stack } : {}),
    ...(err.cause !== undefined && depth < 4 ? { cause: report(err.cause, depth + 1) } : {}),
  };
}

const { modelDir, text, addSpecialTokens } = workerData as { modelDir: string; text: string; addSpecialTokens: boolean };
try {
  const tokenizer = await loadTokenizer(modelDir);
  const ids = Int32Array.from(tokenizer.encode(text, { addSpecialTokens }));
  parentPort!.postMessage({ ids }, [ids.buffer]);
} catch (err) {
  parentPort!.postMessage({ error: report(err) });
}
