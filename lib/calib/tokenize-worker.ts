/**
 * Worker of `tokenizeInWorker`: tokenizes one text with a model folder's tokenizer and posts the
 * ids (transferred), or the error's message and code, which the caller turns back into its class.
 */
import { parentPort, workerData } from 'node:worker_threads';

import { loadTokenizer } from './tokenizer.js';

const { modelDir, text, addSpecialTokens } = workerData as { modelDir: string; text: string; addSpecialTokens: boolean };
try {
  const tokenizer = await loadTokenizer(modelDir);
  const ids = Int32Array.from(tokenizer.encode(text, { addSpecialTokens }));
  parentPort!.postMessage({ ids }, [ids.buffer]);
} catch (err) {
  const e = err as { message?: unknown; code?: unknown; stack?: unknown };
  parentPort!.postMessage({ error: { message: String(e?.message ?? err), code: e?.code, stack: e?.stack } });
}
