/**
 * Perplexity (REFERENCE.md section 7): tokenize the whole text without special tokens, cut it
 * into non-overlapping windows of `seqlen`, optionally keep the first N, and average the
 * next-token cross-entropy over positions 1..seqlen-1 of every window. Works on dense Hugging
 * Face folders and on AWQ checkpoints (through their packed weights, dequantized as written).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { backends, resolveBackend, setThreads } from '../backends.js';
import { CudaError, InvalidArgumentError, ioError, NonFiniteError } from '../errors.js';
import { native, withCudaBuildCommand } from '../native.js';
import { CudaHiddenStates } from '../quantize/cuda-hidden.js';
import { checkSequenceFits } from '../models/config.js';
import { checkModelTensors, embed, inLayer, loadLayerWeights, openModelWeights, type ModelWeights } from '../models/weights.js';
import { checkControl, ProgressTracker, throwIfAborted, type ProgressListener } from '../progress.js';
import { decoderLayerForward, decoderLayerForwardOnDevice, lmHeadNll, type LayerWeights } from '../quantize/layer.js';
import { tokenizeInWorker } from '../calib/tokenize-in-worker.js';
import { decodeUtf8 } from '../utf8.js';
import { firstNonFiniteHalf, halfExponentMask, halfFormat, type HalfArray } from '../half.js';
import { requiredObject } from '../validate.js';

export interface EvaluateOptions {
  /** Model folder: Hugging Face (dense) or AWQ checkpoint. */
  model: string;
  /** Evaluation text, or a path to it. */
  text?: string;
  textPath?: string;
  seqlen?: number; // 512
  /** Only the first N windows (default: all). */
  windows?: number;
  /**
   * Where the decoder layers run: 'cpu' (default), 'cuda' (device 0; CudaError without a CUDA
   * build and device) or 'auto' (CUDA when available, else the CPU with a progress note). fp32
   * either way; the final norm, lm_head and log-softmax run on the CPU.
   */
  backend?: 'cpu' | 'cuda' | 'auto';
  /**
   * Native threads (default: the pool as it is). Resizes the process-wide pool for everything
   * that runs afterwards, as `setThreads` and `quantize({ threads })` do.
   */
  threads?: number;
  signal?: AbortSignal;
  /** Progress events; an exception the listener throws fails the evaluation with that exception. */
  onProgress?: ProgressListener;
}

export interface EvaluateResult {
  perplexity: number;
  /** Tokens in the evaluated windows (windows * seqlen). */
  tokens: number;
  /** Tokens whose probability was scored (windows * (seqlen - 1)). */
  predictedTokens: number;
  windows: number;
  /** Whole windows the text holds (`windows` is fewer when options.windows asked for fewer). */
  availableWindows: number;
  seqlen: number;
  /** Mean negative log-likelihood (nats per token). */
  meanNll: number;
  quantized: boolean;
  /** What ran the decoder layers, e.g. `cpu (avx512, 2 threads)` or `cuda (NVIDIA H200)`. */
  backend: string;
  /** The native thread pool's size during the run (the CPU's share of the work). */
  threads: number;
  elapsedMs: number;
}

/**
 * Tokenizing a whole evaluation text takes seconds (pure-JS BPE); harnesses evaluate several
 * checkpoints of one model on one text, so the last result is kept, keyed by the tokenizer's
 * bytes and the text's hash (quantized checkpoints carry the same tokenizer.json).
 */
let lastTokenization: { key: string; ids: Int32Array } | undefined;

async function tokenizeOnce(modelDir: string, text: string, signal: AbortSignal | undefined): Promise<Int32Array> {
  let tokenizerBytes: Buffer;
  try {
    tokenizerBytes = await readFile(join(modelDir, 'tokenizer.json'));
  } catch {
    tokenizerBytes = Buffer.alloc(0); // loadTokenizer reports the missing file precisely
  }
  const key = `${createHash('sha256').update(tokenizerBytes).digest('hex')}:${createHash('sha256').update(text).digest('hex')}`;
  if (lastTokenization?.key === key) return lastTokenization.ids;
  const ids = await tokenizeInWorker(modelDir, text, { addSpecialTokens: false, signal });
  lastTokenization = { key, ids };
  return ids;
}

/**
 * Hidden states of this many bytes are processed at a time (bounded memory for large models). On
 * CUDA each chunk uploads every layer's weights once, so chunks are larger there (host memory
 * holds a chunk's embeddings and its final states; the device its states and one layer's output).
 */
const CHUNK_BYTES = 256 * 2 ** 20;
const CUDA_CHUNK_BYTES = 2 * 2 ** 30;
/** Layer weights stay cached across chunks when the whole model (fp32) is smaller than this. */
const CACHE_BYTES = 4 * 2 ** 30;

export async function evaluate(options: EvaluateOptions): Promise<EvaluateResult> {
  requiredObject(options, 'evaluate: options ({ model, text | textPath, ... })');
  if (typeof options.model !== 'string' || options.model === '') {
    throw new InvalidArgumentError(`model: expected a folder path, got ${JSON.stringify(options.model)}`);
  }
  for (const key of ['text', 'textPath'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'string') throw new InvalidArgumentError(`${key}: expected a string, got ${typeof options[key]}`);
  }
  checkControl(options.signal, options.onProgress);
  const seqlen = options.seqlen ?? 512;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new InvalidArgumentError(`seqlen: expected an integer >= 2, got ${seqlen}`);
  if (options.windows !== undefined && (!Number.isInteger(options.windows) || options.windows < 1)) {
    throw new InvalidArgumentError(`windows: expected a positive integer, got ${options.windows}`);
  }
  if ((options.text === undefined) === (options.textPath === undefined)) {
    throw new InvalidArgumentError('give exactly one of text and textPath');
  }
  const started = performance.now();
  const progress = new ProgressTracker(options.onProgress);
  let text = options.text;
  if (text === undefined) {
    let bytes: Buffer;
    try {
      bytes = await readFile(options.textPath!);
    } catch (err) {
      throw ioError(`cannot read evaluation text ${options.textPath}`, err);
    }
    // Strict: invalid bytes would become U+FFFD and be scored as text (a binary file gave a perplexity).
    text = decodeUtf8(bytes, options.textPath!);
  }
  // Threads first: the backend's description (in the result) names the thread count.
  if (options.threads !== undefined) setThreads(options.threads);
  let resolved = resolveBackend(options.backend ?? 'cpu', 'fp32', 'evaluating');
  if (resolved.backend === 'cuda' && typeof native().cudaHiddenForward !== 'function') {
    const stale = withCudaBuildCommand('this CUDA build predates evaluation on CUDA: rebuild it with `npm run build:cuda`');
    if (options.backend === 'cuda') throw new CudaError(stale);
    resolved = { ...resolveBackend('cpu', 'fp32'), note: `${stale}; evaluating on the CPU` };
  }
  if (resolved.note) progress.notice(resolved.note);
  const model = await openModelWeights(options.model);
  try {
    // Every tensor the forward reads is there, floating point, of the shape config.json implies:
    // from the headers, before tokenizing and before any layer (openModelWeights checked an AWQ
    // checkpoint already). A config that disagrees with the embedding crashed with a RangeError.
    if (!model.quantization) checkModelTensors(model);
    checkSequenceFits(model.config, seqlen, 'seqlen');
    progress.emit({ stage: 'load', completed: 0, total: 1, message: 'tokenizing' });
    const ids = await tokenizeOnce(options.model, text, options.signal);
    const available = Math.floor(ids.length / seqlen);
    if (available === 0) {
      throw new InvalidArgumentError(`evaluation text has ${ids.length} tokens, fewer than one window of ${seqlen}`);
    }
    const windows = Math.min(available, options.windows ?? available);
    if (options.windows !== undefined && options.windows > available) {
      progress.notice(`${options.windows} windows asked for, the text holds ${available}: evaluating ${available}`);
    }
    const nll = await modelNll(model, ids.slice(0, windows * seqlen), seqlen, resolved.backend, progress, options.signal);
    const meanNll = nll.sum / nll.count;
    const perplexity = Math.exp(meanNll);
    if (!Number.isFinite(perplexity)) {
      // NaN logits, a token of probability 0, or a mean NLL beyond ~709 nats: no number to report
      // (JSON has no Infinity; `awq eval --json` printed null).
      throw new NonFiniteError(
        `${options.model}: the mean negative log-likelihood over ${windows} windows is ${meanNll} nats per token, ` +
          'so the perplexity is not a finite number: the model\'s activations or logits overflow',
      );
    }
    return {
      perplexity,
      tokens: windows * seqlen,
      predictedTokens: nll.count,
      windows,
      availableWindows: available,
      seqlen,
      meanNll,
      quantized: model.quantization !== null,
      backend: resolved.description.replace(', fp32', ''),
      threads: backends().cpu.threads,
      elapsedMs: performance.now() - started,
    };
  } finally {
    await model.close();
  }
}

async function modelNll(
  model: ModelWeights,
  tokens: Int32Array,
  seqlen: number,
  backend: 'cpu' | 'cuda',
  progress: ProgressTracker,
  signal: AbortSignal | undefined,
): Promise<{ sum: number; count: number }> {
  const cfg = model.config;
  const arch = model.adapter.layerArch;
  const windows = tokens.length / seqlen;
  const windowBytes = seqlen * cfg.hiddenSize * 4;
  const chunkBytes = backend === 'cuda' ? Math.min(CUDA_CHUNK_BYTES, (backends().cuda?.devices[0].memoryBytes ?? 0) / 8) : CHUNK_BYTES;
  const windowsPerChunk = Math.max(1, Math.floor(chunkBytes / windowBytes));
  // The embedding and lm_head as stored: fp16 / bf16 ones at half the memory of fp32 copies (2.1 GB
  // saved on Llama 3 8B), widened as they are used with the same results.
  const embedTable = await readFiniteStored(model, model.adapter.embedTokens);
  const finalNorm = await readFinite(model, model.adapter.finalNorm);
  const lmHead = model.adapter.lmHead === model.adapter.embedTokens ? embedTable : await readFiniteStored(model, model.adapter.lmHead);
  const layerBytes =
    4 * (4 * cfg.hiddenSize * cfg.numHeads * cfg.headDim + 3 * cfg.hiddenSize * cfg.intermediateSize);
  const cache = layerBytes * cfg.numLayers <= CACHE_BYTES ? new Map<number, LayerWeights>() : undefined;
  const layer = async (i: number) => {
    const hit = cache?.get(i);
    if (hit) return hit;
    const w = await loadLayerWeights(model, i);
    cache?.set(i, w);
    return w;
  };
  let sum = 0;
  let count = 0;
  progress.beginUnits();
  for (let w0 = 0; w0 < windows; w0 += windowsPerChunk) {
    const w1 = Math.min(windows, w0 + windowsPerChunk);
    const chunk = tokens.subarray(w0 * seqlen, w1 * seqlen);
    let hidden = embed(embedTable, cfg.hiddenSize, chunk);
    const step = (i: number) => progress.emit({ stage: 'eval', completed: w0, total: windows, layer: i, phase: 'forward' });
    if (backend === 'cuda') {
      // the chunk's activations stay on the device from the embedding to the last layer
      const device = await CudaHiddenStates.upload(hidden, cfg.hiddenSize);
      try {
        for (let i = 0; i < cfg.numLayers; i++) {
          throwIfAborted(signal);
          step(i);
          await inLayer(model, i, async () => decoderLayerForwardOnDevice(arch, await layer(i), device, seqlen, { signal }));
        }
        hidden = await device.download();
      } finally {
        await device.release().catch(() => undefined); // the garbage collector frees it otherwise
      }
    } else {
      for (let i = 0; i < cfg.numLayers; i++) {
        throwIfAborted(signal);
        step(i);
        const input = hidden;
        hidden = await inLayer(model, i, async () => decoderLayerForward(arch, await layer(i), input, seqlen, { signal }));
      }
    }
    const r = await lmHeadNll(hidden, seqlen, finalNorm, cfg.rmsNormEps, lmHead, cfg.vocabSize, chunk);
    sum += r.nllSum;
    count += r.count;
    progress.emit({ stage: 'eval', completed: w1, total: windows });
  }
  return { sum, count };
}

/**
 * A tensor outside the decoder layers, checked finite as it is read: NaN in the embedding or the
 * final norm would otherwise surface after every layer, under the native kernel's short name.
 */
async function readFinite(model: ModelWeights, name: string): Promise<Float32Array> {
  return checkFinite(model, name, await model.readTensor(name));
}

/** readFinite keeping an fp16 / bf16 tensor as stored. */
async function readFiniteStored(model: ModelWeights, name: string): Promise<Float32Array | HalfArray> {
  const t = await model.readStored(name);
  if (t instanceof Float32Array) return checkFinite(model, name, t);
  const format = halfFormat(t, name);
  const i = firstNonFiniteHalf(t.data, format);
  if (i >= 0) {
    const h = t.data[i];
    const value = h & (0x7fff & ~halfExponentMask(format)) ? 'NaN' : h & 0x8000 ? '-Infinity' : 'Infinity';
    throw new NonFiniteError(`${model.dir}: tensor '${name}': element ${i} is ${value}`);
  }
  return t;
}

function checkFinite(model: ModelWeights, name: string, data: Float32Array): Float32Array {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new NonFiniteError(`${model.dir}: tensor '${name}': element ${i} is ${data[i]}`);
  }
  return data;
}
