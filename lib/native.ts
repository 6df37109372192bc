/**
 * The one place that loads a native binary and declares what it exports. Everything else in
 * lib/ calls `native()` and gets typed functions whose errors are already `AwqError`s.
 *
 * Load order: an explicit AWQ_NATIVE_BINARY path; else the CUDA build (build-cuda/, from
 * `npm run build:cuda`) when it loads and a CUDA device answers; else the CPU build
 * (prebuilds/ or build/, through node-gyp-build). A failed load lists every path tried and why.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import { CudaError, fromNativeError, InvalidArgumentError, NativeLoadError } from './errors.js';
import type { LayerArch, LayerWeights, Precision, QuantizedLinear } from './quantize/layer.js';

export type Isa = 'portable' | 'avx2' | 'avx512' | 'neon';

export interface RawCudaDevice {
  index: number;
  name: string;
  computeCapability: string;
  memoryBytes: number;
}

export interface RawBackends {
  cpu: { isa: Isa; threads: number; cores: number; features: string; bf16Products: boolean };
  cuda: { compiled: boolean; devices: RawCudaDevice[]; reason: string | null };
}

/** The raw surface of native/addon. Shapes are validated in TypeScript before these calls. */
export interface NativeBinding {
  readonly cudaBuild: boolean;
  /** The bindings' contract version (native/addon/system.cc); absent in builds before it: 1. */
  readonly interfaceVersion?: number;
  backends(): RawBackends;
  setThreads(threads: number): number;
  setIsaCap(isa: Isa): Isa;
  /** Per-column mean |x| of a row-major [rows, cols] matrix (REFERENCE.md section 4). */
  activationStats(x: Float32Array, rows: number, cols: number, device?: 'cpu' | 'cuda'): Promise<Float32Array>;

  // --- checkpoints (lib/checkpoint): AWQ packing (REFERENCE.md section 6), fp16/bf16 conversion ---
  /** q [out,in], zeros/scales [out,in/g] -> [qweight [in,out/8], qzeros [in/g,out/8], scales fp16 [in/g,out]]. */
  packAwq(
    q: Uint8Array, zeros: Uint8Array, scales: Float32Array, outFeatures: number, inFeatures: number, groupSize: number,
  ): Promise<[Int32Array, Int32Array, Uint16Array]>;
  /** The inverse of packAwq: [q [out,in], zeros [out,in/g], scales [out,in/g]]. */
  unpackAwq(
    qweight: Int32Array, qzeros: Int32Array, scales: Uint16Array, outFeatures: number, inFeatures: number, groupSize: number,
  ): Promise<[Uint8Array, Uint8Array, Float32Array]>;
  /** w [out, in] = (q - z) * s. */
  dequantizeAwq(
    qweight: Int32Array, qzeros: Int32Array, scales: Uint16Array, outFeatures: number, inFeatures: number, groupSize: number,
  ): Promise<Float32Array>;
  /** Widens fp16/bf16 bit patterns into dst (same length). */
  convertToF32(src: Uint16Array, dtype: 'F16' | 'BF16', dst: Float32Array): Promise<void>;
  /** The same widening on the calling thread (serial vector code), for a few rows. */
  widenSync(src: Uint16Array, dtype: 'F16' | 'BF16', dst: Float32Array): void;
  /** Narrows into dst (same length); reports the first NaN/Inf input and first finite overflow (-1: none). */
  convertFromF32(
    src: Float32Array, dtype: 'F16' | 'BF16', dst: Uint16Array,
  ): Promise<{ firstNonFinite: number; firstOverflow: number }>;
  // --- decoder-layer numerics (native/addon/layer*.cc, wrapped by lib/quantize/layer.ts) ---
  /** Full-precision decoder-layer forward over blocks of `seqlen` tokens. */
  decoderLayerForward(arch: LayerArch, weights: LayerWeights, hidden: Float32Array, seqlen: number, abortFlag?: Int32Array): Promise<Float32Array>;
  /** REFERENCE.md section 1, dequantized (round-to-nearest, no scaling or clipping). */
  pseudoQuantize(w: Float32Array, out: number, inF: number, wBit: number, groupSize: number, zeroPoint: boolean): Promise<Float32Array>;
  /** Next-token NLL summed over positions 1..seqlen-1 of every window (REFERENCE.md section 7). */
  lmHeadNll(hidden: Float32Array, hiddenSize: number, seqlen: number, finalNorm: Float32Array, eps: number, lmHead: Float32Array | Uint16Array, vocab: number, tokens: Int32Array, abortFlag?: Int32Array, lmHeadFormat?: 'fp16' | 'bf16'): Promise<{ nllSum: number; count: number }>;
  /** Sections 3-5 for one decoder layer: forward, scale search + fold, clip search, integer quantization. */
  quantizeDecoderLayer(arch: LayerArch, weights: LayerWeights, hidden: Float32Array | CudaHiddenHandle | null, seqlen: number, options: RawQuantOptions, onPhase: ((phase: string) => void) | undefined, abortFlag?: Int32Array): Promise<RawQuantizedLayer>;
  // Device-resident hidden states for the CUDA layer driver (native/addon/cuda_hidden.cc).
  cudaHiddenUpload(hidden: Float32Array, hiddenSize: number): Promise<CudaHiddenHandle>;
  cudaHiddenInfo(h: CudaHiddenHandle): { tokens: number; hiddenSize: number; released: boolean };
  cudaHiddenDownload(h: CudaHiddenHandle): Promise<Float32Array>;
  cudaHiddenRelease(h: CudaHiddenHandle): Promise<void>;
  /** One decoder layer's fp32 forward on the device states, in place (evaluation on CUDA). */
  cudaHiddenForward(h: CudaHiddenHandle, arch: LayerArch, weights: LayerWeights, seqlen: number, abortFlag?: Int32Array): Promise<void>;
  // Dense fp32 GEMM (native/addon/gemm.cc).
  /**
   * C = alpha * op(A) op(B) + beta * C in place (row-major, BLAS-style strides); resolves with c.
   * With bFormat, b holds fp16 / bf16 bits (a Uint16Array), widened as it is packed.
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    lda: number,
    b: Float32Array | Uint16Array,
    ldb: number,
    beta: number,
    c: Float32Array,
    ldc: number,
    precision?: 'fp32' | 'bf16',
    bFormat?: 'fp16' | 'bf16',
  ): Promise<Float32Array>;
  /** Measured fp32 FMA throughput (GFLOP/s) of the active ISA on the current thread count. */
  fmaPeak(secondsPerRep?: number, reps?: number): Promise<number>;

  // ---- int4 GEMM (native/addon/int4.cc; lib/gemm/int4-linear.ts is the typed facade) ----
  /** Repacks AutoAWQ tensors (REFERENCE.md section 6); group 0 means one group per row. */
  int4PackAwq(
    qweight: Int32Array, qzeros: Int32Array, scales: Uint16Array, bias: Uint16Array | null,
    inFeatures: number, outFeatures: number, groupSize: number,
  ): Promise<Int4Handle>;
  /** Repacks quantizer output: q [out, in], zeros and scales [out, in/group]. */
  int4PackQuantized(
    q: Uint8Array, zeros: Uint8Array, scales: Float32Array, bias: Float32Array | null,
    inFeatures: number, outFeatures: number, groupSize: number,
  ): Promise<Int4Handle>;
  int4Info(w: Int4Handle): { in: number; out: number; group: number; bytes: number };
  /** y[m, out] = x[m, in] W^T (+ bias); dtype 0 f32, 1 f16, 2 bf16 (x a Uint16Array); mode 0 exact, 1 int8. */
  int4Forward(w: Int4Handle, x: Float32Array | Uint16Array, dtype: 0 | 1 | 2, m: number, mode: 0 | 1, y: Float32Array): Promise<Float32Array>;
  int4ForwardSync(w: Int4Handle, x: Float32Array | Uint16Array, dtype: 0 | 1 | 2, m: number, mode: 0 | 1, y: Float32Array): Float32Array;
  int4Dequantize(w: Int4Handle, dst: Float32Array): Float32Array;
  /** Drops the weights now; calls in flight keep their own reference (Int4Linear.dispose). */
  int4Release(w: Int4Handle): void;
  // CUDA int4 GEMM (native/addon/int4_cuda.cc): AWQ tensors uploaded to device 0, x rounded to fp16.
  int4CudaUpload(
    qweight: Int32Array, qzeros: Int32Array, scales: Uint16Array, bias: Uint16Array | null,
    inFeatures: number, outFeatures: number, groupSize: number,
  ): Promise<CudaInt4Handle>;
  int4CudaInfo(w: CudaInt4Handle): { in: number; out: number; group: number; bytes: number };
  int4CudaForward(w: CudaInt4Handle, x: Float32Array | Uint16Array, dtype: 0 | 1 | 2, m: number, y: Float32Array): Promise<Float32Array>;
  /** Frees the layer's device memory (after a forward in flight); later calls on it reject. */
  int4CudaRelease(w: CudaInt4Handle): Promise<void>;
  /** A buffer for the bandwidth probe of `awq bench`, allocated as the int4 weights are (huge pages advised, every page touched). */
  benchStreamPool(bytes: number): StreamPool;
  /** Reads pool[offset, offset + length) once on the thread pool, synchronously; returns a checksum. */
  benchStreamRead(pool: StreamPool, offset: number, length: number): number;
  // `awq bench cuda-gemm` (native/addon/cuda_bench.cc): device 0, a stream of the benchmark's own.
  /** 1 GiB device-to-device copy: GB/s counted as bytes read + written. */
  cudaBenchCopy(): Promise<number>;
  /** Median ms per call of the automatic int4 kernel and the dense fp16 GEMM on random [K, N] weights. */
  cudaBenchGemm(
    K: number, N: number, ms: number[], reps: number,
  ): Promise<{ int4WeightBytes: number; rows: Array<{ m: number; int4Ms: number; denseMs: number }> }>;
}

/** Opaque native buffer of the bandwidth probe (freed by the garbage collector). */
export interface StreamPool {
  readonly __brand: 'awq.StreamPool';
}

/** Opaque native handle of hidden states in device memory (cudaHiddenUpload; freed by release or the GC). */
export interface CudaHiddenHandle {
  readonly __brand: 'awq.CudaHiddenHandle';
}

/** Opaque native handle of repacked int4 weights (freed by the garbage collector). */
export interface Int4Handle {
  readonly __brand: 'awq.Int4Handle';
}

/** Opaque native handle of int4 weights in CUDA device memory (freed by the garbage collector). */
export interface CudaInt4Handle {
  readonly __brand: 'awq.CudaInt4Handle';
}

/** Options of quantizeDecoderLayer as the addon reads them (groupSize already resolved per linear in native code). */
export interface RawQuantOptions {
  wBit: number;
  groupSize: number;
  zeroPoint: boolean;
  duoScaling: boolean;
  clip: boolean;
  awq: boolean;
  nGrid: number;
  maxShrink: number;
  fp16SearchScales: boolean;
  /** 'cpu' (default) or 'cuda' (a CUDA build with a device). */
  backend?: 'cpu' | 'cuda';
  /** Arithmetic of the layer's products on 'cuda' (default 'fp32'). */
  precision?: Precision;
}

export interface RawQuantizedLayer {
  linears: Record<string, Omit<QuantizedLinear, 'outFeatures' | 'inFeatures'>>;
  inputNorm: Float32Array;
  postNorm: Float32Array;
  output: Float32Array;
  report: {
    groups: { group: string; linears: string[]; foldedInto: string; skipped?: string; bestRatio: number | null; lossAtBest: number | null; lossAtZero: number | null; losses: number[]; salientChannels: { channel: number; stat: number }[] }[];
    clip: { linear: string; meanShrink: number; shrinkHistogram: number[] }[];
    timingsMs: { forward: number; scaleSearch: number; clipSearch: number; quantize: number };
    gflop: number;
  };
}

export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

interface Loaded {
  binding: NativeBinding;
  path: string;
}

let loaded: Loaded | undefined;
/** What the loader tried before settling on a binary (for `awq doctor`). */
const loadNotes: string[] = [];

/** An addon error as its AwqError class; a CUDA one with the build command that works here. */
function typedNativeError(err: unknown): unknown {
  const typed = fromNativeError(err);
  if (typed instanceof CudaError) typed.message = withCudaBuildCommand(typed.message);
  return typed;
}

function wrapErrors<T extends object>(raw: T): T {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'function') {
      out[key] = value;
      continue;
    }
    const fn = value as (...args: unknown[]) => unknown;
    out[key] = (...args: unknown[]) => {
      let result: unknown;
      try {
        result = fn(...args);
      } catch (err) {
        throw typedNativeError(err);
      }
      if (result instanceof Promise) {
        return result.catch((err: unknown) => {
          throw typedNativeError(err);
        });
      }
      return result;
    };
  }
  return out as T;
}

/**
 * The contract version this TypeScript expects of the addon (kInterfaceVersion in
 * native/addon/system.cc: bumped together).
 */
export const INTERFACE_VERSION = 2;

/**
 * Why a CUDA build that loaded is not used, or null to use it: no device answered, or it was built
 * before the bindings changed (a `git pull` does not rebuild it; its bindings would misread new
 * arguments).
 */
export function cudaBuildUnusable(b: Pick<NativeBinding, 'interfaceVersion' | 'backends'>): string | null {
  const version = b.interfaceVersion ?? 1;
  if (version !== INTERFACE_VERSION) {
    return `it was built for native interface ${version}, this awq needs ${INTERFACE_VERSION}: rebuild it with ${cudaBuildCommand()}`;
  }
  if (b.backends().cuda.devices.length === 0) return `no device answered: ${b.backends().cuda.reason ?? 'no device'}`;
  return null;
}

function load(): Loaded {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  const attempt = (path: string): NativeBinding | undefined => {
    try {
      return require(path) as NativeBinding;
    } catch (err) {
      tried.push(`${path}: ${(err as Error).message.split('\n')[0]}`);
      return undefined;
    }
  };

  const explicit = process.env.AWQ_NATIVE_BINARY;
  if (explicit) {
    const b = attempt(explicit);
    if (b) return { binding: b, path: explicit };
    throw new NativeLoadError(`AWQ_NATIVE_BINARY could not be loaded:\n  ${tried.join('\n  ')}`);
  }

  const cudaPath = join(packageRoot, 'build-cuda', 'Release', 'awq.node');
  if (process.env.AWQ_NO_CUDA !== '1' && existsSync(cudaPath)) {
    const b = attempt(cudaPath);
    if (b) {
      const why = cudaBuildUnusable(b);
      if (why === null) return { binding: b, path: cudaPath };
      tried.push(`${cudaPath}: loaded, but ${why}; using the CPU build`);
      loadNotes.push(`the CUDA build loads, but ${why}`);
    }
  }

  try {
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    const cpuPath = nodeGypBuild.path(packageRoot);
    const b = attempt(cpuPath);
    if (b) return { binding: b, path: cpuPath };
  } catch (err) {
    tried.push(`node-gyp-build in ${packageRoot}: ${(err as Error).message.split('\n')[0]}`);
  }
  throw new NativeLoadError(`no native awq binary could be loaded. Tried:\n  ${tried.join('\n  ')}\n${howToBuild()}`);
}

/**
 * The command that makes a CUDA build where the user stands: `npm run build:cuda` in this checkout;
 * where awq is installed (a dependency, a dependency's dependency, a global install, pnpm's
 * layout), the same script run in the installed package's folder, named by its path (`npm
 * explore awq` finds only a direct dependency of the current project).
 */
function cudaBuildCommand(): string {
  return installedAsDependency() ? `\`cd ${JSON.stringify(packageRoot)} && npm run build:cuda\`` : '`npm run build:cuda`';
}

/** This package sits in a node_modules folder (installed from npm), not in a checkout. */
function installedAsDependency(): boolean {
  return packageRoot.split(sep).includes('node_modules');
}

/** A message of the addon, which names `npm run build:cuda`, with the command that works here. */
export function withCudaBuildCommand(message: string): string {
  return message.replaceAll('`npm run build:cuda`', cudaBuildCommand());
}

/** What builds a binary: in this checkout, or in a project that installed awq from npm. */
function howToBuild(): string {
  if (!installedAsDependency()) {
    return 'Build one with `npm run build:native` (CPU) or `npm run build:cuda` (CUDA).';
  }
  // An install that skipped or failed awq's install script (which compiles the CPU addon).
  return (
    'awq is installed as a dependency, but its addon was not built (its install script did not run or failed). ' +
    `Build it with \`npm rebuild awq\` (CPU: node-gyp, a C++ compiler, make and python3) or ${cudaBuildCommand()} ` +
    '(CUDA: nvcc and CMake).'
  );
}

/**
 * The README's runtime knobs, checked before the native code reads them (it reads them once, and
 * would take a typo for the default: `AWQ_ISA=AVX2` ran the AVX-512 kernels, `AWQ_THREADS=abc` all
 * cores).
 */
function checkRuntimeKnobs(): void {
  const env = process.env;
  const bad = (name: string, expected: string) =>
    new InvalidArgumentError(`environment variable ${name}: expected ${expected}, got ${JSON.stringify(env[name])}`);
  const integer = (name: string, min: number, max: number) => {
    const v = env[name];
    if (v === undefined || v === '') return;
    if (!/^\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max) throw bad(name, `an integer from ${min} to ${max}`);
  };
  integer('AWQ_THREADS', 1, 1024);
  integer('AWQ_POOL_SPIN_US', 0, 1_000_000);
  const isa = env.AWQ_ISA;
  if (isa !== undefined && isa !== '' && !['portable', 'avx2', 'avx512', 'neon'].includes(isa)) {
    throw bad('AWQ_ISA', "'portable', 'avx2', 'avx512' or 'neon'");
  }
  const huge = env.AWQ_HUGEPAGES;
  if (huge !== undefined && huge !== '' && huge !== '0' && huge !== '1') throw bad('AWQ_HUGEPAGES', "'0' or '1'");
}

/** The loaded native binding (loaded once, on first use). */
export function native(): NativeBinding {
  if (!loaded) {
    checkRuntimeKnobs();
    const l = load();
    loaded = { binding: wrapErrors(l.binding), path: l.path };
  }
  return loaded.binding;
}

/** Notes from loading (e.g. why a present CUDA build was not used). */
export function nativeLoadNotes(): readonly string[] {
  native();
  return loadNotes;
}

/** Path of the binary `native()` loaded. */
export function nativePath(): string {
  native();
  return loaded!.path;
}
