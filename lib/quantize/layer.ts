/**
 * Decoder-layer numerics (REFERENCE.md sections 1-5 and 7): the full-precision forward, group
 * pseudo-quantization, the per-layer AWQ search + quantization, and the LM-head loss. The block-wise
 * pipeline (lib/quantize/pipeline.ts) calls these one layer at a time.
 *
 * Everything is fp32 with Hugging Face shapes ([out, in] for linears, row-major). Inputs are
 * validated here, before native code runs, with messages that name the argument.
 */
import { AbortedError, InvalidArgumentError } from '../errors.js';
import { floatOrHalf, type HalfArray } from '../half.js';
import { checkControl } from '../progress.js';
import { describeValue, requiredObject } from '../validate.js';
import { native, type RawQuantizedLayer } from '../native.js';
import { CudaHiddenStates } from './cuda-hidden.js';

export interface LayerArch {
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  /** [headDim / 2]; rope scaling (llama3, linear) is applied by the caller. */
  ropeInvFreq: Float32Array;
  /** Qwen3: per-head RMSNorm of q and k before RoPE. */
  qkNorm: boolean;
}

/** fp32, row-major, Hugging Face shapes ([out, in] for linears). */
export interface LayerWeights {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
  qBias?: Float32Array;
  kBias?: Float32Array;
  vBias?: Float32Array;
  oBias?: Float32Array;
  /** [headDim], Qwen3. */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
}

export type LinearName = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';
export const LINEAR_NAMES: readonly LinearName[] = Object.freeze(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);

export interface QuantOptions {
  /** 2..8, default 4. */
  wBit: number;
  /** 32 | 64 | 128 | -1 (-1 = one group per row), default 128. Must divide every in_features. */
  groupSize: number;
  /** Asymmetric with zero point (default true); false: symmetric. */
  zeroPoint: boolean;
  /** s = x_mean^a / w_mean^(1-a) (default true); false: s = x_mean^a. */
  duoScaling: boolean;
  /** Clip search (default true). */
  clip: boolean;
  /** 'rtn': no scaling, no clipping. */
  method: 'awq' | 'rtn';
  /** Grid points of the scale search, default 20. */
  nGrid?: number;
  /** Largest clip shrink, default 0.5 (nGrid * maxShrink steps). */
  maxShrink?: number;
  /**
   * Round the scales of the search's candidate pseudo-quantizations to fp16 too (default false:
   * candidates use fp32 scales, as the reference run does; the final integer quantization always
   * uses fp16-rounded scales, which is what the checkpoint stores).
   */
  fp16SearchScales?: boolean;
  /** Where the layer is quantized: 'cpu' (default) or 'cuda' (device 0 of a CUDA build). */
  backend?: 'cpu' | 'cuda';
  /**
   * Arithmetic of the layer's linear products (the recorded forward, the candidates' forwards, the
   * Gram losses; attention, norms and the clip search stay fp32). Default 'fp32' (on 'cuda' the CPU
   * path's choices, ties aside). 'bf16' rounds the operands to bf16 and accumulates in fp32: on
   * the CPU it runs on AVX512-BF16 or arm64 BFDOT (`backends().cpu.bf16Products`) at about twice the
   * fp32 rate, and elsewhere on the fp32 kernels (the same numbers, no faster); on CUDA on the
   * tensor cores.
   * 'fp16' is CUDA only. Losses move by the rounding, so close candidates may swap.
   */
  precision?: Precision;
}

export type Precision = 'fp32' | 'bf16' | 'fp16';

/**
 * One quantized linear: what `Int4Linear.fromQuantized` and `packAwq` take as they are (both read
 * outFeatures / inFeatures; out / in are the same numbers).
 */
export interface QuantizedLinear {
  outFeatures: number;
  inFeatures: number;
  out: number;
  in: number;
  /** Actual group size (= in when -1 was asked for). */
  groupSize: number;
  /** [out, in], 0..2^wBit-1 (symmetric: q + 2^(wBit-1)). */
  q: Uint8Array;
  /** [out, in / groupSize]. */
  zeros: Uint8Array;
  /** [out, in / groupSize], fp16-representable. */
  scales: Float32Array;
  /** The final bias after folding. */
  bias?: Float32Array;
}

export interface GroupReport {
  group: 'qkv' | 'o' | 'gate_up' | 'down';
  linears: LinearName[];
  foldedInto: string;
  /** Why the group was not searched (e.g. 'grouped-query attention'). */
  skipped?: string;
  /**
   * How the losses were computed (absent when skipped): 'direct' runs the compared module on the
   * recorded input for every candidate; 'gram' (single-linear groups o and down) evaluates
   * trace(dW X^T X dW^T) / (n * out) from one Gram matrix. Both are exact; the search takes the
   * one with fewer FLOPs (Gram pays off with many tokens, direct with few tokens and wide inputs).
   */
  lossMethod?: 'gram' | 'direct';
  /** The chosen ratio; null when the group was skipped (so are the losses). */
  bestRatio: number | null;
  lossAtBest: number | null;
  /** Loss at ratio 0. */
  lossAtZero: number | null;
  /** Per grid point. */
  losses: number[];
  /** Top 8 input channels by x_mean. */
  salientChannels: { channel: number; stat: number }[];
}

export interface ClipReport {
  linear: LinearName;
  meanShrink: number;
  /** Count of (row, group) per shrink step. */
  shrinkHistogram: number[];
}

export interface LayerReport {
  groups: GroupReport[];
  clip: ClipReport[];
  timingsMs: { forward: number; scaleSearch: number; clipSearch: number; quantize: number };
  /** Forward FLOPs done (initial forward and search candidates), in GFLOP. */
  gflop: number;
}

export interface QuantizedLayer {
  linears: Record<LinearName, QuantizedLinear>;
  inputNorm: Float32Array;
  postNorm: Float32Array;
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  /**
   * Next layer's input: the full-precision forward output, computed before any scaling (empty
   * when RTN ran without hidden states, and when the hidden states were CudaHiddenStates: those
   * then hold it).
   */
  output: Float32Array;
  report: LayerReport;
}

export type LayerPhase = 'forward' | 'scale-search' | 'clip-search' | 'quantize';

/**
 * Runs the AWQ search and quantization of one decoder layer (REFERENCE.md sections 3-5).
 * RTN (method 'rtn') uses no activations: pass `hidden = null` to skip the forward (seqlen is then
 * ignored and `output` is empty); with hidden states it still returns the forward output.
 * With backend 'cuda', `hidden` may be CudaHiddenStates: the layer's input is read from the
 * device and its output replaces it there (`output` is then empty); after an error or an abort
 * they still hold the input. An exception thrown by `control.onPhase` stops the work as an abort
 * does, and the call rejects with that exception.
 */
export async function quantizeDecoderLayer(
  arch: LayerArch,
  weights: LayerWeights,
  hidden: Float32Array | CudaHiddenStates | null,
  seqlen: number,
  options: QuantOptions,
  control: { signal?: AbortSignal; onPhase?: (phase: LayerPhase) => void } = {},
): Promise<QuantizedLayer> {
  validateLayer(arch, weights);
  const raw = validateOptions(options, arch);
  if (hidden === null) {
    if (raw.awq) {
      throw new InvalidArgumentError(`hidden: the AWQ search needs the calibration hidden states; null is accepted only with method 'rtn'`);
    }
    seqlen = 1;
  } else if (hidden instanceof CudaHiddenStates) {
    positiveInt('seqlen', seqlen);
    if (options.backend !== 'cuda') throw new InvalidArgumentError(`hidden: CudaHiddenStates need options.backend 'cuda'`);
    if (hidden.hiddenSize !== arch.hiddenSize) {
      throw new InvalidArgumentError(`hidden: the device hidden states have width ${hidden.hiddenSize}, the layer's hiddenSize is ${arch.hiddenSize}`);
    }
    if (hidden.tokens % seqlen !== 0) {
      throw new InvalidArgumentError(`hidden: ${hidden.tokens} device tokens are not whole blocks of seqlen ${seqlen}`);
    }
  } else {
    validateHidden(hidden, arch.hiddenSize, seqlen);
  }
  requiredObject(control, 'control');
  checkControl(control.signal, control.onPhase, 'control.onPhase');
  const onPhase = control.onPhase;
  const nativeHidden = hidden instanceof CudaHiddenStates ? hidden.nativeHandle() : hidden;
  // An exception thrown by onPhase stops the native work (through the abort flag) and is what the
  // call rejects with; the native side never sees it (it would have to swallow it).
  let thrown: { error: unknown } | undefined;
  return withAbort(control.signal, async (flag) => {
    const phase = onPhase && flag
      ? (p: string) => {
          if (thrown) return;
          try {
            onPhase(p as LayerPhase);
          } catch (error) {
            thrown = { error };
            Atomics.store(flag, 0, 1);
          }
        }
      : undefined;
    let r: RawQuantizedLayer;
    try {
      r = await native().quantizeDecoderLayer(arch, weights, nativeHidden, seqlen, raw, phase, flag);
    } catch (err) {
      throw thrown ? thrown.error : err;
    }
    if (thrown) throw thrown.error; // the last phase's listener threw after the work had finished
    const out: QuantizedLayer = {
      linears: Object.fromEntries(
        Object.entries(r.linears).map(([name, l]) => [name, { ...l, outFeatures: l.out, inFeatures: l.in }]),
      ) as Record<LinearName, QuantizedLinear>,
      inputNorm: r.inputNorm,
      postNorm: r.postNorm,
      output: r.output,
      report: r.report as LayerReport,
    };
    if (weights.qNorm) out.qNorm = weights.qNorm.slice();
    if (weights.kNorm) out.kNorm = weights.kNorm.slice();
    return out;
  }, onPhase !== undefined);
}

/** Full-precision decoder-layer forward (for evaluation). */
export async function decoderLayerForward(
  arch: LayerArch,
  weights: LayerWeights,
  hidden: Float32Array,
  seqlen: number,
  control: { signal?: AbortSignal } = {},
): Promise<Float32Array> {
  validateLayer(arch, weights);
  validateHidden(hidden, arch.hiddenSize, seqlen);
  return withAbort(control.signal, (flag) => native().decoderLayerForward(arch, weights, hidden, seqlen, flag));
}

/**
 * decoderLayerForward on device-resident hidden states, in place (fp32; CUDA builds): after it
 * `hidden` holds the layer's output (after an error or an abort, still its input). What
 * `evaluate` with backend 'cuda' runs per layer, so a chunk's activations stay on the device.
 */
export async function decoderLayerForwardOnDevice(
  arch: LayerArch,
  weights: LayerWeights,
  hidden: CudaHiddenStates,
  seqlen: number,
  control: { signal?: AbortSignal } = {},
): Promise<void> {
  validateLayer(arch, weights);
  if (!(hidden instanceof CudaHiddenStates)) throw new InvalidArgumentError(`hidden: expected CudaHiddenStates, got ${describeValue(hidden)}`);
  if (hidden.hiddenSize !== arch.hiddenSize || hidden.tokens % positiveInt('seqlen', seqlen) !== 0) {
    throw new InvalidArgumentError(
      `hidden: expected [blocks * seqlen, ${arch.hiddenSize}] device states, got [${hidden.tokens}, ${hidden.hiddenSize}] (seqlen ${seqlen})`,
    );
  }
  return withAbort(control.signal, (flag) => native().cudaHiddenForward(hidden.nativeHandle(), arch, weights, seqlen, flag));
}

/** REFERENCE.md section 1 applied to `w` [out, inF]: the dequantized weights (RTN). */
export async function pseudoQuantize(
  w: Float32Array,
  out: number,
  inF: number,
  opts: { wBit: number; groupSize: number; zeroPoint: boolean },
): Promise<Float32Array> {
  checkFloat32('w', w, positiveInt('out', out) * positiveInt('inF', inF));
  checkWBit(opts.wBit);
  const g = resolveGroup(opts.groupSize, inF, 'w');
  return native().pseudoQuantize(w, out, inF, opts.wBit, g, opts.zeroPoint !== false);
}

/**
 * Next-token negative log-likelihood of the last layer's output (REFERENCE.md section 7): final
 * RMSNorm, lm_head, log-softmax in fp32 with max subtraction (fp64 sums), summed over positions
 * 1..seqlen-1 of every window of `seqlen` tokens.
 */
export async function lmHeadNll(
  hidden: Float32Array,
  seqlen: number,
  finalNorm: Float32Array,
  eps: number,
  lmHead: Float32Array | HalfArray,
  vocab: number,
  tokens: Int32Array,
  control: { signal?: AbortSignal } = {},
): Promise<{ nllSum: number; count: number }> {
  if (!(finalNorm instanceof Float32Array) || finalNorm.length < 1) {
    throw new InvalidArgumentError(`finalNorm: expected a non-empty Float32Array, got ${describeValue(finalNorm)}`);
  }
  const H = finalNorm.length;
  positiveInt('vocab', vocab);
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new InvalidArgumentError(`seqlen: expected an integer >= 2, got ${seqlen}`);
  validateHidden(hidden, H, seqlen);
  // A 16-bit lm_head (fp16 / bf16 as stored) is widened as it is multiplied: bitwise the widened one's result.
  const { data: headData, format: headFormat } = floatOrHalf(lmHead, 'lmHead');
  if (!(headData instanceof Float32Array) && headFormat === undefined) {
    throw new InvalidArgumentError(`lmHead: expected a Float32Array or { data: Uint16Array, dtype: 'fp16' | 'bf16' }, got ${describeValue(lmHead)}`);
  }
  if (headData.length !== vocab * H) throw new InvalidArgumentError(`lmHead: expected ${vocab * H} elements, got ${headData.length}`);
  if (!(tokens instanceof Int32Array) || tokens.length !== hidden.length / H) {
    throw new InvalidArgumentError(`tokens: expected an Int32Array of ${hidden.length / H} ids, got ${describeValue(tokens)} of length ${(tokens as { length?: number })?.length}`);
  }
  if (!(eps > 0)) throw new InvalidArgumentError(`eps: expected a positive number, got ${eps}`);
  return withAbort(control.signal, (flag) => native().lmHeadNll(hidden, H, seqlen, finalNorm, eps, headData, vocab, tokens, flag, headFormat));
}

// --- validation --------------------------------------------------------------------------------

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${name}: expected a positive integer, got ${v}`);
  return v;
}

function checkFloat32(name: string, a: unknown, expected: number): void {
  if (!(a instanceof Float32Array)) throw new InvalidArgumentError(`${name}: expected a Float32Array, got ${describeValue(a)}`);
  if (a.length !== expected) throw new InvalidArgumentError(`${name}: expected ${expected} elements, got ${a.length}`);
}

function checkWBit(wBit: number): void {
  if (!Number.isInteger(wBit) || wBit < 2 || wBit > 8) throw new InvalidArgumentError(`wBit: expected an integer in 2..8, got ${wBit}`);
}

function resolveGroup(groupSize: number, inF: number, what: string): number {
  if (groupSize === -1) return inF;
  if (!Number.isInteger(groupSize) || groupSize < 1) {
    throw new InvalidArgumentError(`groupSize: expected a positive integer or -1 (one group per row), got ${groupSize}`);
  }
  if (inF % groupSize !== 0) {
    throw new InvalidArgumentError(`groupSize: ${what} has in_features ${inF}, which is not divisible by the group size ${groupSize}`);
  }
  return groupSize;
}

function validateLayer(arch: LayerArch, w: LayerWeights): void {
  requiredObject(arch, 'arch');
  const H = positiveInt('arch.hiddenSize', arch.hiddenSize);
  const I = positiveInt('arch.intermediateSize', arch.intermediateSize);
  const nh = positiveInt('arch.numHeads', arch.numHeads);
  const nkv = positiveInt('arch.numKvHeads', arch.numKvHeads);
  const hd = positiveInt('arch.headDim', arch.headDim);
  if (nh % nkv !== 0) throw new InvalidArgumentError(`arch.numHeads: expected a multiple of numKvHeads (${nkv}), got ${nh}`);
  if (hd % 2 !== 0) throw new InvalidArgumentError(`arch.headDim: expected an even number (RoPE), got ${hd}`);
  if (!(arch.rmsNormEps > 0)) throw new InvalidArgumentError(`arch.rmsNormEps: expected a positive number, got ${arch.rmsNormEps}`);
  checkFloat32('arch.ropeInvFreq', arch.ropeInvFreq, hd / 2);
  requiredObject(w, 'weights');
  const QO = nh * hd, KV = nkv * hd;
  const shapes: [keyof LayerWeights, number, boolean][] = [
    ['inputNorm', H, true], ['postNorm', H, true],
    ['q', QO * H, true], ['k', KV * H, true], ['v', KV * H, true], ['o', H * QO, true],
    ['gate', I * H, true], ['up', I * H, true], ['down', H * I, true],
    ['qBias', QO, false], ['kBias', KV, false], ['vBias', KV, false], ['oBias', H, false],
    ['qNorm', hd, arch.qkNorm], ['kNorm', hd, arch.qkNorm],
  ];
  for (const [name, n, required] of shapes) {
    if (w[name] === undefined && !required) continue;
    checkFloat32(`weights.${name}`, w[name], n);
  }
}

function validateHidden(hidden: Float32Array, H: number, seqlen: number): void {
  positiveInt('seqlen', seqlen);
  if (!(hidden instanceof Float32Array)) throw new InvalidArgumentError(`hidden: expected a Float32Array, got ${describeValue(hidden)}`);
  if (hidden.length === 0 || hidden.length % (H * seqlen) !== 0) {
    throw new InvalidArgumentError(`hidden: expected [blocks * seqlen, hiddenSize] = a positive multiple of ${H * seqlen} elements, got ${hidden.length}`);
  }
}

function validateOptions(o: QuantOptions, arch: LayerArch) {
  requiredObject(o, 'options');
  checkWBit(o.wBit);
  if (o.method !== 'awq' && o.method !== 'rtn') throw new InvalidArgumentError(`options.method: expected 'awq' or 'rtn', got ${String(o.method)}`);
  // every linear's in_features must be divisible by the group size
  resolveGroup(o.groupSize, arch.hiddenSize, 'q/k/v/gate/up_proj');
  resolveGroup(o.groupSize, arch.numHeads * arch.headDim, 'o_proj');
  resolveGroup(o.groupSize, arch.intermediateSize, 'down_proj');
  const nGrid = o.nGrid ?? 20;
  const maxShrink = o.maxShrink ?? 0.5;
  if (!Number.isInteger(nGrid) || nGrid < 1 || nGrid > 1000) throw new InvalidArgumentError(`options.nGrid: expected an integer in 1..1000, got ${nGrid}`);
  if (!(maxShrink >= 0 && maxShrink < 1)) throw new InvalidArgumentError(`options.maxShrink: expected a number in [0, 1), got ${maxShrink}`);
  return {
    wBit: o.wBit,
    groupSize: o.groupSize,
    zeroPoint: o.zeroPoint !== false,
    duoScaling: o.duoScaling !== false,
    clip: o.clip !== false,
    awq: o.method === 'awq',
    nGrid,
    maxShrink,
    fp16SearchScales: o.fp16SearchScales === true,
    backend: checkBackend(o.backend),
    precision: checkPrecision(o.precision, o.backend),
  };
}

function checkBackend(b: unknown): 'cpu' | 'cuda' {
  if (b === undefined || b === 'cpu' || b === 'cuda') return b ?? 'cpu';
  throw new InvalidArgumentError(`options.backend: expected 'cpu' or 'cuda', got ${describeValue(b)}`);
}

function checkPrecision(p: unknown, backend: unknown): Precision {
  if (p === undefined || p === 'fp32') return 'fp32';
  if (p !== 'bf16' && p !== 'fp16') throw new InvalidArgumentError(`options.precision: expected 'fp32', 'bf16' or 'fp16', got ${describeValue(p)}`);
  if (p === 'fp16' && backend !== 'cuda') {
    throw new InvalidArgumentError("options.precision: 'fp16' needs backend 'cuda' (the CPU takes 'fp32' or 'bf16')");
  }
  return p;
}

/**
 * Runs `fn` with an Int32Array flag that the signal sets; native code polls it. With `needFlag`
 * there is a flag without a signal too (the caller sets it itself).
 */
async function withAbort<T>(
  signal: AbortSignal | undefined,
  fn: (flag: Int32Array | undefined) => Promise<T>,
  needFlag = false,
): Promise<T> {
  if (!signal) return fn(needFlag ? new Int32Array(1) : undefined);
  if (signal.aborted) throw new AbortedError('aborted before the native call started');
  const flag = new Int32Array(1);
  const onAbort = () => Atomics.store(flag, 0, 1);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await fn(flag);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
