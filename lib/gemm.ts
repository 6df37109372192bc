/**
 * Dense fp32 matrix product on the native CPU kernels (blocked, packed, AVX-512 / AVX2 with a
 * portable fallback; bf16 operands on AVX512-BF16; B may be stored as fp16 / bf16), and the measured
 * FMA ceiling it is judged against.
 */
import { InvalidArgumentError } from './errors.js';
import { floatOrHalf, type HalfArray } from './half.js';
import { native } from './native.js';
import { describeValue, optionsObject, requiredObject } from './validate.js';

export interface DenseGemmOptions {
  /** op(A) is [m, k]: A stored [m, k] (transA false) or [k, m] (transA true), row stride lda. */
  a: Float32Array;
  /**
   * op(B) is [k, n]: B stored [k, n] (transB false) or [n, k] (transB true: a weight W[out, in]).
   * Stored as fp16 / bf16 (`{ data: Uint16Array, dtype }`, e.g. an lm_head from `loadAwq({ widen:
   * false })`), it is widened exactly as it is packed: bitwise the result on its fp32 widening,
   * without that copy, and at m = 1 (memory-bound) 1.3-1.7x as fast (benchmarks/half-weights.mjs).
   */
  b: Float32Array | HalfArray;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  /** Output [m, n] with row stride ldc; allocated (zeros) when absent. Written in place. */
  c?: Float32Array;
  alpha?: number;
  /** 0 (default) overwrites c without reading it. */
  beta?: number;
  lda?: number;
  ldb?: number;
  ldc?: number;
  /**
   * 'fp32' (default) or 'bf16': both operands rounded to bf16 (nearest even), exact products
   * summed in fp32; about 2x the fp32 rate on CPUs with AVX512-BF16 or arm64 BF16 (BFDOT;
   * `backends().cpu.bf16Products`), the fp32 kernels' speed elsewhere.
   */
  precision?: 'fp32' | 'bf16';
}

/** C = alpha * op(A) op(B) + beta * C (row-major); resolves with C. */
export async function denseGemm(options: DenseGemmOptions): Promise<Float32Array> {
  const { a, b, m, n, k, transA = false, transB = false, alpha = 1, beta = 0, precision = 'fp32' } = requiredObject(options, 'denseGemm options');
  if (precision !== 'fp32' && precision !== 'bf16') {
    throw new InvalidArgumentError(`precision: expected 'fp32' or 'bf16', got ${String(precision)}`);
  }
  for (const [name, v] of [['m', m], ['n', n], ['k', k]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new InvalidArgumentError(`${name}: expected an integer >= 0, got ${v}`);
  }
  for (const [name, v] of [['alpha', alpha], ['beta', beta]] as const) {
    if (typeof v !== 'number' || Number.isNaN(v)) throw new InvalidArgumentError(`${name}: expected a number, got ${v}`);
  }
  const lda = options.lda ?? Math.max(transA ? m : k, 1);
  const ldb = options.ldb ?? Math.max(transB ? k : n, 1);
  const ldc = options.ldc ?? Math.max(n, 1);
  checkMatrix('a', a, transA ? k : m, transA ? m : k, lda);
  const { data: bData, format: bFormat } = floatOrHalf(b, 'b');
  checkMatrix('b', bData, transB ? n : k, transB ? k : n, ldb, bFormat !== undefined);
  const c = options.c ?? allocateOutput(m === 0 || n === 0 ? 0 : (m - 1) * ldc + n);
  checkMatrix('c', c, m, n, ldc);
  return native().sgemm(transA, transB, m, n, k, alpha, a, lda, bData, ldb, beta, c, ldc, precision, bFormat);
}

/** Measured fp32 FMA throughput (GFLOP/s, best of `reps`) on the native thread pool. */
export async function fmaPeakGflops(options?: { secondsPerRep?: number; reps?: number }): Promise<number> {
  const { secondsPerRep = 0.05, reps = 5 } = optionsObject(options, 'options');
  if (!(secondsPerRep > 0 && secondsPerRep <= 10)) {
    throw new InvalidArgumentError(`secondsPerRep: expected a number in (0, 10], got ${secondsPerRep}`);
  }
  if (!Number.isInteger(reps) || reps < 1) throw new InvalidArgumentError(`reps: expected an integer >= 1, got ${reps}`);
  return native().fmaPeak(secondsPerRep, reps);
}

function allocateOutput(elements: number): Float32Array {
  try {
    return new Float32Array(elements);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw new InvalidArgumentError(`c: an output of ${elements} elements is more than one Float32Array holds here; pass a smaller m or n`);
  }
}

/** `half`: x is a HalfArray's data (b only). */
function checkMatrix(name: string, x: unknown, rows: number, cols: number, ld: number, half = false): void {
  if (!(half ? x instanceof Uint16Array : x instanceof Float32Array)) {
    // a HalfArray's data is checked by isHalfArray, so this is a bare array
    const expected = name === 'b' ? "a Float32Array or { data: Uint16Array, dtype: 'fp16' | 'bf16' }" : 'a Float32Array';
    throw new InvalidArgumentError(`${name}: expected ${expected}, got ${describeValue(x)}`);
  }
  if (!Number.isInteger(ld) || ld < Math.max(cols, 1)) {
    throw new InvalidArgumentError(`ld${name}: expected an integer >= ${Math.max(cols, 1)}, got ${ld}`);
  }
  const need = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  const { length } = x as Float32Array | Uint16Array;
  if (length < need) {
    throw new InvalidArgumentError(
      `${name}: expected at least ${need} elements (${rows}x${cols}, stride ${ld}), got ${length}`,
    );
  }
}
