/**
 * Typed errors. Every error this package throws is an `AwqError` with a stable `code`; native
 * errors arrive with the same codes (native/core/errors.h) and are mapped onto these classes.
 */

export type AwqErrorCode =
  | 'ERR_AWQ_INVALID_ARGUMENT'
  | 'ERR_AWQ_BAD_CHECKPOINT'
  | 'ERR_AWQ_UNSUPPORTED_ARCHITECTURE'
  | 'ERR_AWQ_BAD_CONFIG'
  | 'ERR_AWQ_NON_FINITE'
  | 'ERR_AWQ_OUT_OF_MEMORY'
  | 'ERR_AWQ_ABORTED'
  | 'ERR_AWQ_CUDA'
  | 'ERR_AWQ_NATIVE_LOAD'
  | 'ERR_AWQ_IO'
  | 'ERR_AWQ_INTERNAL';

export class AwqError extends Error {
  readonly code: AwqErrorCode;
  constructor(code: AwqErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A function argument has the wrong type, shape or value. */
export class InvalidArgumentError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_INVALID_ARGUMENT', message, options);
  }
}

/** A checkpoint file or folder is malformed, truncated or inconsistent. */
export class BadCheckpointError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_BAD_CHECKPOINT', message, options);
  }
}

/** The model's architecture (config.json `model_type`) is not one this package handles. */
export class UnsupportedArchitectureError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_UNSUPPORTED_ARCHITECTURE', message, options);
  }
}

/** A configuration (config.json, quantization options) is missing a field or has a wrong one. */
export class BadConfigError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_BAD_CONFIG', message, options);
  }
}

/** NaN or Inf in weights or activations. */
export class NonFiniteError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_NON_FINITE', message, options);
  }
}

export class OutOfMemoryError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_OUT_OF_MEMORY', message, options);
  }
}

/** The caller's AbortSignal fired; nothing that looks complete was written. */
export class AbortedError extends AwqError {
  constructor(message = 'aborted', options?: { cause?: unknown }) {
    super('ERR_AWQ_ABORTED', message, options);
  }
}

export class CudaError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_CUDA', message, options);
  }
}

/** No native binary could be loaded. */
export class NativeLoadError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_NATIVE_LOAD', message, options);
  }
}

/** A file system operation failed (disk full, permissions, ...). */
export class IoError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_IO', message, options);
  }
}

export class InternalError extends AwqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AWQ_INTERNAL', message, options);
  }
}

const byCode: Record<string, new (message: string, options?: { cause?: unknown }) => AwqError> = {
  ERR_AWQ_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_AWQ_BAD_CHECKPOINT: BadCheckpointError,
  ERR_AWQ_UNSUPPORTED_ARCHITECTURE: UnsupportedArchitectureError,
  ERR_AWQ_BAD_CONFIG: BadConfigError,
  ERR_AWQ_NON_FINITE: NonFiniteError,
  ERR_AWQ_OUT_OF_MEMORY: OutOfMemoryError,
  ERR_AWQ_ABORTED: AbortedError,
  ERR_AWQ_CUDA: CudaError,
  ERR_AWQ_NATIVE_LOAD: NativeLoadError,
  ERR_AWQ_IO: IoError,
  ERR_AWQ_INTERNAL: InternalError,
};

/** The AwqError class of a code (`ERR_AWQ_...`), or undefined for any other value. */
export function awqErrorClass(code: unknown): (new (message: string, options?: { cause?: unknown }) => AwqError) | undefined {
  return typeof code === 'string' && Object.hasOwn(byCode, code) ? byCode[code] : undefined;
}

/** Turns an error thrown by the native addon (a plain Error with `code`) into its typed class. */
export function fromNativeError(err: unknown): unknown {
  if (err instanceof AwqError || !(err instanceof Error)) return err;
  const Ctor = awqErrorClass((err as Error & { code?: unknown }).code);
  if (!Ctor) return err;
  const typed = new Ctor(err.message);
  if (err.stack) typed.stack = err.stack.replace(/^Error:/, `${typed.name}:`);
  return typed;
}

/**
 * What a write failure means for the user when the disk, the quota or a file-size limit ran out:
 * the raw messages ("EFBIG: file too large, write") do not say what to do about it.
 */
const FULL: Record<string, string> = {
  ENOSPC: 'no space left on device: the disk is full (ENOSPC); free space or write elsewhere',
  EDQUOT: 'disk quota exceeded: the quota is full (EDQUOT); free space or write elsewhere',
  EFBIG:
    'file too large: the file system or the process file-size limit (ulimit -f) allows no more (EFBIG); ' +
    'the disk is full for this file: raise the limit or write elsewhere',
};

/**
 * Wraps a Node.js file system error with the path it concerns (`what` names the file). Only string
 * codes (ENOSPC, ...) are looked up: libraries set others (fzstd's `code` is a number, 0 for
 * "invalid zstd data"), and `0 && ...` would have made the message "0".
 */
export function ioError(what: string, err: unknown): AwqError {
  const e = err as { code?: unknown; message?: unknown } | null | undefined;
  const full = typeof e?.code === 'string' ? FULL[e.code] : undefined;
  const message = typeof e?.message === 'string' && e.message ? e.message : undefined;
  return new IoError(`${what}: ${full ?? message ?? String(err)}`, { cause: err });
}
