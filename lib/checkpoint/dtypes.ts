/** The tensor element types of safetensors that this package reads and writes. */
import { BadCheckpointError } from '../errors.js';

export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each supported dtype. */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = Object.freeze({
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
});

export function isDtype(v: unknown): v is Dtype {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, v);
}

/** The dtypes a model's floating-point tensors (weights, norms, embeddings, biases) may have. */
export const FLOAT_DTYPES = ['F32', 'F16', 'BF16'] as const;
export type FloatDtype = (typeof FLOAT_DTYPES)[number];

export function isFloatDtype(d: Dtype): d is FloatDtype {
  return (FLOAT_DTYPES as readonly string[]).includes(d);
}

/**
 * The error for a tensor read as floating point that is stored as another dtype: integers would be
 * taken as numbers (an I16 q_proj gave a perplexity and a quantized checkpoint of garbage).
 */
export function notFloatError(file: string, name: string, dtype: Dtype): BadCheckpointError {
  return new BadCheckpointError(
    `${file}: tensor '${name}' has dtype ${dtype}, but it is read as floating-point weights: accepted dtypes are F32, F16 and BF16`,
  );
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

