/**
 * The block-wise AWQ pipeline (REFERENCE.md section 3): embed the calibration blocks, then for
 * each decoder layer load only its tensors, run the native forward + scale search + fold + clip
 * search + quantization, pack and append the result to the output shards, and free it. Peak
 * memory is one layer (fp32) plus the calibration hidden states and the layer's recorded inputs.
 * With backend 'cuda' the hidden states are uploaded once and stay in device memory
 * (CudaHiddenStates): each layer reads its input there and leaves its output there.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

import { buildCalibrationBlocks, checkCalibrationSource, describeSource, type CalibrationSource } from '../calib/dataset.js';
import { loadTokenizer } from '../calib/tokenizer.js';
import { AwqCheckpointWriter } from '../checkpoint/awq-format.js';
import { checkAuxiliaryFilesReadable } from '../checkpoint/model-folder.js';
import { checkOutputTarget, staleTempDirs } from '../checkpoint/output-dir.js';
import { backends, resolveBackend, setThreads } from '../backends.js';
import { CudaHiddenStates } from './cuda-hidden.js';
import { BadCheckpointError, InvalidArgumentError } from '../errors.js';
import { LINEAR_NAMES } from '../models/adapters.js';
import { checkSequenceFits } from '../models/config.js';
import { checkModelTensors, embed, inLayer, loadLayerWeights, openModelWeights, type ModelWeights } from '../models/weights.js';
import { checkControl, ProgressTracker, throwIfAborted, type ProgressListener } from '../progress.js';
import { describeArgument, optionalBoolean, requiredObject } from '../validate.js';
import { version } from '../version.js';
import { layerTensorNames, packLayer, writePackedLayer } from './packed-layer.js';
import { digest, finishedCheckpoint, modelFingerprint, resumeDirFor, ResumeState, type RunFingerprint } from './resume.js';
import { quantizeDecoderLayer, type LayerReport, type Precision, type QuantOptions } from './layer.js';

export interface QuantizeOptions {
  /** Hugging Face model folder (Llama, Mistral, Qwen2, Qwen3). */
  model: string;
  /** Output folder; refused when it exists unless `overwrite`. */
  out: string;
  overwrite?: boolean;
  /** Calibration data; default: the general English set shipped with the package. */
  calib?: CalibrationSource;
  nSamples?: number; // 128
  seqlen?: number; // 512
  wBit?: number; // 4
  /** 32, 64, 128 (default) or -1: one group per row (config.json's group_size -1; see README). */
  groupSize?: number;
  zeroPoint?: boolean; // true
  duoScaling?: boolean; // true
  clip?: boolean; // true
  /** `awq` (default) or `rtn`: round-to-nearest, no scaling, no clipping (the baseline). */
  method?: 'awq' | 'rtn';
  /** Native threads (default: all available cores). */
  threads?: number;
  /** 'auto' (default): CUDA when a CUDA build sees a device, else the CPU (with a progress note). */
  backend?: 'cpu' | 'cuda' | 'auto';
  /**
   * Arithmetic of the layers' linear products (see QuantOptions): 'fp32', 'bf16', 'fp16' (CUDA),
   * or 'auto' (default): 'bf16' on a CPU with AVX512-BF16, else 'fp32' (resolveBackend). The
   * report's options.precision says which ran.
   */
  precision?: Precision | 'auto';
  maxShardBytes?: number;
  /**
   * Write the unquantized tensors (embeddings, norms, lm_head) in the source dtype (bf16 / fp32)
   * instead of fp16, with config.json's torch_dtype to match: for a model whose values overflow
   * fp16. vLLM then needs its Marlin AWQ kernel (its plain AWQ kernel runs fp16 only).
   */
  keepDtype?: boolean;
  /**
   * Keep every finished layer in `<out>.resume/` (see resume.ts), and continue after the last one
   * kept there by an earlier run of the same model, settings and calibration. A run that stops
   * leaves that folder (and no output folder); the finished run removes it. Costs a write of each
   * packed layer and of the calibration hidden states (tokens x hidden x 4 bytes) per layer.
   */
  resume?: boolean;
  /** Stops the run (AbortedError); nothing that looks complete is written. */
  signal?: AbortSignal;
  /**
   * Called synchronously with each progress event; the last, `done`, comes just before the output
   * folder is renamed into place. An exception the listener throws fails the run with that
   * exception, at any event (native work in progress stops promptly, as on an abort): the
   * temporary folder is removed and no output folder appears (with resume, the layers finished so
   * far stay kept). Once the output is in place the run's promise resolves.
   */
  onProgress?: ProgressListener;
}

export interface LayerSummary extends LayerReport {
  layer: number;
  wallMs: number;
}

export interface QuantizationReport {
  model: string;
  modelType: string;
  /** precision: the arithmetic of the search's linear products, as resolved (see QuantOptions). */
  options: Required<Pick<QuantOptions, 'wBit' | 'groupSize' | 'zeroPoint' | 'duoScaling' | 'clip' | 'method' | 'precision'>>;
  calibration: { source: string; samples: number; blocks: number; seqlen: number; droppedTokens: number } | null;
  layers: LayerSummary[];
  totalMs: number;
  /** Peak resident memory of this process so far (bytes). */
  peakRssBytes: number;
  backend: string;
  /** Layers taken from `<out>.resume/` (finished by an earlier run), when resuming. */
  resumedLayers?: number;
  /** Where those layers were computed (e.g. `cpu: avx512`, `cuda: NVIDIA H200 (compute capability 9.0)`). */
  resumedOn?: string[];
}

export interface QuantizeResult {
  out: string;
  report: QuantizationReport;
}

/**
 * Before any slow work: the output may be written (an existing one replaced) at all, every tensor
 * the run reads is there, and every auxiliary file it copies at the end can be read; notes for
 * what earlier runs left beside the output and for source tensors that will not be written.
 */
async function checkBeforeWork(options: QuantizeOptions, model: ModelWeights, inputs: string[], progress: ProgressTracker): Promise<void> {
  const note = (message: string) => progress.notice(message);
  await checkOutputTarget(options.out, { overwrite: options.overwrite, inputDir: options.model, inputs });
  for (const dir of await staleTempDirs(options.out)) note(`${dir} was left by a run that was killed (its process is gone): remove it`);
  await checkAuxiliaryFilesReadable(options.model);
  const { unused, missingBiases } = checkModelTensors(model);
  if (missingBiases.length > 0) {
    note(
      `${missingBiases.length} ${missingBiases.length === 1 ? 'bias' : 'biases'} that ${model.config.modelType} builds ` +
        `${missingBiases.length === 1 ? 'is' : 'are'} not in ${options.model} (${missingBiases[0]}${missingBiases.length > 1 ? ', ...' : ''}): ` +
        'taken as zero, as Transformers starts them, and written as zeros',
    );
  }
  if (unused.length > 0) {
    const shown = unused.slice(0, 5).join(', ') + (unused.length > 5 ? ` and ${unused.length - 5} more` : '');
    const what = unused.length === 1 ? `1 tensor of ${options.model} is` : `${unused.length} tensors of ${options.model} are`;
    note(`${what} not part of a ${model.config.modelType} model and will not be written: ${shown}`);
  }
}

/** Options that are true or false; absent means the default. Any other value is refused, not coerced. */
const BOOLEAN_OPTIONS = ['overwrite', 'zeroPoint', 'duoScaling', 'clip', 'keepDtype', 'resume'] as const;

function resolveOptions(o: QuantizeOptions): QuantOptions {
  requiredObject(o, 'options ({ model, out, ... })');
  for (const name of ['model', 'out'] as const) {
    if (typeof o[name] !== 'string' || o[name] === '') throw new InvalidArgumentError(`${name}: expected a folder path, got ${describeArgument(o[name])}`);
  }
  for (const name of BOOLEAN_OPTIONS) optionalBoolean(o[name], name);
  checkControl(o.signal, o.onProgress);
  // The calibration options are checked with method 'rtn' too, which does not read them.
  // maxShardBytes is the writer's, made after calibration: checked here so a bad value fails first.
  for (const name of ['nSamples', 'seqlen', 'maxShardBytes'] as const) {
    const v: unknown = o[name];
    if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 1)) {
      throw new InvalidArgumentError(`${name}: expected a positive integer, got ${describeArgument(v)}`);
    }
  }
  if (o.calib !== undefined && o.calib !== null) checkCalibrationSource(o.calib);
  const q: QuantOptions = {
    wBit: o.wBit ?? 4,
    groupSize: o.groupSize ?? 128,
    zeroPoint: o.zeroPoint ?? true,
    duoScaling: o.duoScaling ?? true,
    clip: o.clip ?? true,
    method: o.method ?? 'awq',
  };
  if (![2, 3, 4].includes(q.wBit)) {
    throw new InvalidArgumentError(`wBit: expected 2, 3 or 4 (the AutoAWQ GEMM checkpoint stores 4-bit weights), got ${describeArgument(q.wBit)}`);
  }
  if (![32, 64, 128, -1].includes(q.groupSize)) throw new InvalidArgumentError(`groupSize: expected 32, 64, 128 or -1, got ${describeArgument(q.groupSize)}`);
  if (q.method !== 'awq' && q.method !== 'rtn') throw new InvalidArgumentError(`method: expected 'awq' or 'rtn', got ${describeArgument(q.method)}`);
  return q;
}

export async function quantize(options: QuantizeOptions): Promise<QuantizeResult> {
  const started = performance.now();
  const opts = resolveOptions(options);
  // Threads first: the backend's description (in the report) names the thread count.
  if (options.threads !== undefined) setThreads(options.threads);
  const resolved = resolveBackend(options.backend ?? 'auto', options.precision ?? 'auto');
  opts.backend = resolved.backend;
  opts.precision = resolved.precision;
  const progress = new ProgressTracker(options.onProgress);
  if (resolved.note) progress.notice(resolved.note);
  const signal = options.signal;

  progress.emit({ stage: 'load', completed: 0, total: 1, message: `opening ${options.model}` });
  const model = await openModelWeights(options.model);
  if (model.quantization) {
    await model.close();
    throw new InvalidArgumentError(`${options.model} is already an AWQ checkpoint; quantize the original model`);
  }
  const cfg = model.config;
  const adapter = model.adapter;
  let writer: AwqCheckpointWriter | undefined;
  let deviceHidden: CudaHiddenStates | undefined;
  let kept: ResumeState<LayerSummary> | undefined;
  /** The last finished layer's save into `kept`, still being written. */
  let saving: Promise<void> | undefined;
  try {
    // the calibration file (a --calib-tokens file too) is an input: the output must not replace it
    const inputs = options.calib && 'path' in options.calib && options.calib.path !== undefined ? [options.calib.path] : [];
    const seqlen = options.seqlen ?? 512;
    // The calibration tokens and (with resume) the run's fingerprint, made once where first needed.
    let prepared: PreparedRun | undefined;
    const prepare = async () => (prepared ??= await prepareRun(options, opts, cfg, seqlen, progress));
    if (options.resume && !options.overwrite) {
      // the same command again after a stop between the checkpoint's commit and the clean-up
      // (the calibration is read only when both folders are there and the reports agree)
      const finished = await finishedCheckpoint(options.out, cfg.numLayers, async () => (await prepare()).run!, () =>
        progress.emit({ stage: 'done', completed: cfg.numLayers, total: cfg.numLayers, message: `${options.out} was already complete; removed the ${options.out}.resume it left` }),
      );
      if (finished) return { out: options.out, report: finished as unknown as QuantizationReport };
    }
    await checkBeforeWork(options, model, inputs, progress);
    // Every quantized linear must split into whole groups: check before any work.
    if (opts.groupSize > 0) {
      for (const name of LINEAR_NAMES) {
        const [, inF] = adapter.linearShape(name);
        if (inF % opts.groupSize !== 0) {
          throw new InvalidArgumentError(
            `${adapter.linear(0, name)}: in_features ${inF} is not divisible by the group size ${opts.groupSize}`,
          );
        }
      }
    }

    // The embedding table is read once: it embeds the calibration blocks and is written unquantized.
    let embedTable: Float32Array | undefined = await model.readTensor(adapter.embedTokens);

    // Calibration (not needed for round-to-nearest), unless the check above already made it.
    const { calibration, tokens: calibrationTokens, run } = await prepare();
    throwIfAborted(signal);
    let hidden: Float32Array | undefined;

    const machine = machineOf(resolved);
    if (run) {
      kept = await ResumeState.open<LayerSummary>(options.out, run);
      if (kept.layersDone > 0) {
        if (calibrationTokens) {
          // the next layer's input, instead of the embedded calibration tokens
          const h = await kept.readHidden();
          if (h?.data.length !== calibrationTokens.length * cfg.hiddenSize) {
            throw new BadCheckpointError(`${kept.dir}: the hidden states after layer ${kept.layersDone - 1} are missing or of another size; remove the folder to start afresh`);
          }
          hidden = h.data;
        }
        progress.notice(`resuming after layer ${kept.layersDone - 1} (kept in ${kept.dir})`);
        const elsewhere = [...new Set(kept.machines)].filter((m) => m !== machine);
        if (elsewhere.length > 0) {
          progress.notice(
            `the kept layers were computed on ${elsewhere.join(', ')}, this run computes on ${machine}: ` +
              'the checkpoint equals an uninterrupted run up to fp32 rounding (near-tie choices may differ)',
          );
        }
      }
    }
    if (calibrationTokens && !hidden) hidden = embed(embedTable, cfg.hiddenSize, calibrationTokens);
    if (hidden && opts.backend === 'cuda') {
      // held on the device from here on: each layer reads its input there and leaves its output
      deviceHidden = await CudaHiddenStates.upload(hidden, cfg.hiddenSize);
      hidden = undefined;
    }

    writer = await AwqCheckpointWriter.create(options.out, {
      sourceDir: options.model,
      inputs,
      overwrite: options.overwrite,
      maxShardBytes: options.maxShardBytes,
      keepSourceDtype: options.keepDtype ?? false,
    });
    await writer.addTensor(adapter.embedTokens, [cfg.vocabSize, cfg.hiddenSize], embedTable, model.storedDtype(adapter.embedTokens));
    embedTable = undefined; // not needed again: free it before the layers
    // The last tensors first: a damaged one (a NaN in lm_head) fails the run now, not after the layers.
    await writer.addTensor(adapter.finalNorm, [cfg.hiddenSize], await model.readTensor(adapter.finalNorm), model.storedDtype(adapter.finalNorm));
    if (!cfg.tieWordEmbeddings) {
      await writer.addTensor(adapter.lmHead, [cfg.vocabSize, cfg.hiddenSize], await model.readTensor(adapter.lmHead), model.storedDtype(adapter.lmHead));
    }

    const layers: LayerSummary[] = [];
    const resumed = kept?.layersDone ?? 0;
    for (let i = 0; i < resumed; i++) {
      throwIfAborted(signal);
      await writePackedLayer(writer, await kept!.readLayer(i, layerTensorNames(adapter, i)), (name) => model.storedDtype(name));
      layers.push(kept!.reports[i]);
      progress.emit({ stage: 'layer', completed: i + 1, total: cfg.numLayers, layer: i, phase: 'resumed' });
    }
    progress.beginUnits(resumed);
    for (let i = resumed; i < cfg.numLayers; i++) {
      throwIfAborted(signal);
      const layerStart = performance.now();
      progress.emit({ stage: 'layer', completed: i, total: cfg.numLayers, layer: i, phase: 'load' });
      const weights = await loadLayerWeights(model, i);
      // RTN uses no activations: no hidden states, so no forward runs.
      const input = deviceHidden ?? hidden ?? null;
      const result = await inLayer(model, i, () =>
        quantizeDecoderLayer(adapter.layerArch, weights, input, seqlen, opts, {
          signal,
          onPhase: (phase) => progress.emit({ stage: 'layer', completed: i, total: cfg.numLayers, layer: i, phase }),
        }),
      );
      progress.emit({ stage: 'layer', completed: i, total: cfg.numLayers, layer: i, phase: 'write' });
      const packed = await packLayer(adapter, i, result, weights);
      await writePackedLayer(writer, packed, (name) => model.storedDtype(name));
      if (hidden) hidden = result.output;
      const summary: LayerSummary = { layer: i, wallMs: performance.now() - layerStart, ...result.report };
      if (kept) {
        const next = deviceHidden ? await deviceHidden.download() : hidden;
        // Layers are kept in order; this one's files are written while the next layer computes
        // (on a GPU the write of 1 GiB of hidden states takes about as long as a layer). Neither
        // `packed` nor `next` changes afterwards: the next layer reads `hidden` and returns a new
        // output array (on CUDA, `next` is a host copy of its own).
        await saving;
        saving = kept.saveLayer(i, packed, next ? { data: next, cols: cfg.hiddenSize } : null, summary, machine);
        saving.catch(() => undefined); // awaited (and its error thrown) at the next layer or below
      }
      layers.push(summary);
      progress.emit({ stage: 'layer', completed: i + 1, total: cfg.numLayers, layer: i, phase: 'done' });
    }

    await saving;
    progress.emit({ stage: 'write', completed: cfg.numLayers, total: cfg.numLayers, message: 'writing the checkpoint' });
    const report: QuantizationReport = {
      model: resolve(options.model),
      modelType: cfg.modelType,
      options: {
        wBit: opts.wBit,
        groupSize: opts.groupSize,
        zeroPoint: opts.zeroPoint,
        duoScaling: opts.duoScaling,
        clip: opts.clip,
        method: opts.method,
        precision: resolved.precision,
      },
      calibration,
      layers,
      totalMs: performance.now() - started,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      backend: resolved.description,
      ...(kept ? { resumedLayers: resumed, resumedOn: [...new Set(kept.machines.slice(0, resumed))] } : {}),
    };
    await writer.addFile('awq-report.json', `${JSON.stringify(report, null, 2)}\n`);
    throwIfAborted(signal);
    // The last events come before the folder is renamed into place: a listener that throws fails
    // the run with no output, and nothing after the rename can fail it.
    await writer.finish(model.rawConfig, { groupSize: opts.groupSize }, () => {
      if (!options.resume && existsSync(resumeDirFor(options.out))) {
        progress.notice(`${options.out}.resume holds the layers of an earlier --resume run, which this checkpoint replaces: remove it`);
      }
      progress.emit({ stage: 'done', completed: cfg.numLayers, total: cfg.numLayers });
    });
    writer = undefined;
    await kept?.remove(); // never throws
    kept = undefined;
    return { out: options.out, report };
  } finally {
    // A failed release must not hide the run's own error; the garbage collector frees them then.
    await deviceHidden?.release().catch(() => undefined);
    if (writer) await writer.abort();
    // a layer being kept when the run failed or stopped lands first: the next run starts after it
    await saving?.catch(() => undefined);
    await kept?.close();
    await model.close();
  }
}

interface PreparedRun {
  calibration: QuantizationReport['calibration'];
  /** The calibration blocks' token ids (none for round-to-nearest). */
  tokens: Int32Array | undefined;
  /** What must match for a kept layer to be reused (with options.resume only). */
  run: RunFingerprint | undefined;
}

/** Tokenizes the calibration data (method 'awq') and, with resume, builds the run's fingerprint. */
async function prepareRun(
  options: QuantizeOptions,
  opts: QuantOptions,
  cfg: ModelWeights['config'],
  seqlen: number,
  progress: ProgressTracker,
): Promise<PreparedRun> {
  let calibration: QuantizationReport['calibration'] = null;
  let tokens: Int32Array | undefined;
  if (opts.method === 'awq') {
    checkSequenceFits(cfg, seqlen, 'calibration seqlen');
    const source = options.calib ?? { kind: 'default' };
    progress.emit({ stage: 'calibrate', completed: 0, total: 1, message: `tokenizing ${describeSource(source)}` });
    const tokenizer = source.kind === 'tokens' ? undefined : await loadTokenizer(options.model);
    // every id, pre-tokenized or the tokenizer's, is checked against the model's vocabulary
    const blocks = await buildCalibrationBlocks(source, tokenizer, { nSamples: options.nSamples, seqlen, vocabSize: cfg.vocabSize });
    calibration = {
      source: describeSource(source),
      samples: blocks.acceptedSamples,
      blocks: blocks.blocks,
      seqlen,
      droppedTokens: blocks.droppedTokens,
    };
    tokens = blocks.tokens;
  }
  const run: RunFingerprint | undefined = options.resume
    ? {
        awq: version,
        ...(await modelFingerprint(options.model)),
        method: opts.method,
        wBit: opts.wBit,
        groupSize: opts.groupSize,
        zeroPoint: opts.zeroPoint,
        duoScaling: opts.duoScaling,
        clip: opts.clip,
        precision: opts.precision!,
        'calibration.tokens': tokens ? digest(tokens) : null,
        'calibration.seqlen': opts.method === 'awq' ? seqlen : null,
      }
    : undefined;
  return { calibration, tokens, run };
}

/** Where the search's arithmetic runs: results agree across machines up to fp32 rounding only. */
function machineOf(resolved: ReturnType<typeof resolveBackend>): string {
  const b = backends();
  if (resolved.backend === 'cuda' && b.cuda) {
    const d = b.cuda.devices[0];
    return `cuda: ${d.name} (compute capability ${d.computeCapability})`;
  }
  return `cpu: ${b.cpu.isa}${resolved.precision === 'bf16' && b.cpu.bf16Products ? ' with bf16 instructions' : ''}`;
}
