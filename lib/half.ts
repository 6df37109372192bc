/**
 * 16-bit floats held as their bits (a Uint16Array and its format), as checkpoints store embeddings
 * and lm_heads and serving code keeps activations: the input of `Int4Linear`, the `b` operand of
 * `denseGemm`, the plain tensors of `loadAwq({ widen: false })`; and their exact widening to fp32.
 */
import { InvalidArgumentError } from './errors.js';
import { native } from './native.js';
import { describeArgument, describeValue, overlaps } from './validate.js';

/** fp16 values ('fp16' as `precision` spells it, or 'f16') or bf16 values, as their bits. */
export interface HalfArray {
  data: Uint16Array;
  dtype: 'f16' | 'fp16' | 'bf16';
}

/** Whether x has a HalfArray's shape (halfFormat checks its dtype). */
export function isHalfArray(x: unknown): x is HalfArray {
  return x !== null && typeof x === 'object' && !ArrayBuffer.isView(x) && (x as { data?: unknown }).data instanceof Uint16Array;
}

/** x's format; any dtype but 'fp16', 'f16' and 'bf16' is an InvalidArgumentError naming `what`. */
export function halfFormat(x: HalfArray, what: string): 'fp16' | 'bf16' {
  if (x.dtype === 'bf16') return 'bf16';
  if (x.dtype === 'fp16' || x.dtype === 'f16') return 'fp16';
  throw new InvalidArgumentError(`${what}.dtype: expected 'fp16' (or 'f16') or 'bf16', got ${describeArgument(x.dtype)}`);
}

/**
 * A weight argument as the native calls take it: a Float32Array as it is, or a HalfArray's bits
 * with its checked format (an InvalidArgumentError naming `what` for another dtype).
 */
export function floatOrHalf(x: Float32Array | HalfArray, what: string): { data: Float32Array | Uint16Array; format?: 'fp16' | 'bf16' } {
  return isHalfArray(x) ? { data: x.data, format: halfFormat(x, what) } : { data: x };
}

/** The exponent field of a 16-bit format: all ones is Inf (mantissa 0) or NaN. */
export function halfExponentMask(format: 'fp16' | 'bf16'): number {
  return format === 'fp16' ? 0x7c00 : 0x7f80;
}

/** Index of the first Inf or NaN among 16-bit values of `format`, or -1. */
export function firstNonFiniteHalf(data: Uint16Array, format: 'fp16' | 'bf16'): number {
  const exp = halfExponentMask(format);
  for (let i = 0; i < data.length; i++) if ((data[i] & exp) === exp) return i;
  return -1;
}

/**
 * The values widened to fp32 (exactly), synchronously on the calling thread, into `out` when given
 * (as many elements; e.g. a batch's rows of hidden states) or a new array: meant for a few rows,
 * e.g. the embeddings of a batch's tokens, `toFloat32({ data: emb.data.subarray(t * h, (t + 1) *
 * h), dtype: emb.dtype }, hidden.subarray(i * h, (i + 1) * h))` (about a microsecond for 4096
 * values; a whole vocabulary blocks for a while).
 */
export function toFloat32(x: HalfArray, out?: Float32Array): Float32Array {
  if (!isHalfArray(x)) {
    throw new InvalidArgumentError(`x: expected { data: Uint16Array, dtype: 'fp16' | 'bf16' }, got ${describeValue(x)}`);
  }
  const format = halfFormat(x, 'x');
  if (out !== undefined && (!(out instanceof Float32Array) || out.length !== x.data.length)) {
    const got = out instanceof Float32Array ? `${out.length} elements` : describeValue(out);
    throw new InvalidArgumentError(`out: expected a Float32Array of ${x.data.length} elements (as many as x), got ${got}`);
  }
  // widening in place would overwrite source values before they are read
  const src = out !== undefined && overlaps(x.data, out) ? x.data.slice() : x.data;
  const dst = out ?? new Float32Array(x.data.length);
  native().widenSync(src, format === 'bf16' ? 'BF16' : 'F16', dst);
  return dst;
}
