/** Argument checks shared by the API's entry points: what they refuse is an InvalidArgumentError. */
import { InvalidArgumentError } from './errors.js';

/** A value's kind for a message: `null`, `undefined`, a class name (`Float64Array`) or a typeof. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

/** A value as an argument error shows it: strings quoted (and cut), other values by kind. */
export function describeArgument(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'function') return 'a function';
  if (v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? 'an array' : `an object (${v.constructor?.name ?? 'no prototype'})`;
}

/** An optional options argument: undefined is `{}`, anything but a plain object is refused. */
export function optionsObject<T extends object>(value: T | null | undefined, what: string): T {
  if (value === undefined) return {} as T;
  return requiredObject(value, what);
}

/** A required object argument (an options bag or a record of arrays). */
export function requiredObject<T extends object>(value: T | null | undefined, what: string): T {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`${what}: expected an object, got ${describeValue(value)}`);
  }
  return value;
}

/** A device option: 'cpu' (the default when absent) or 'cuda'; anything else must not run on the CPU silently. */
export function checkDevice(device: unknown): 'cpu' | 'cuda' {
  if (device === undefined) return 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new InvalidArgumentError(`device: expected 'cpu' or 'cuda', got ${describeArgument(device)}`);
  return device;
}

/**
 * A boolean option: absent (undefined) or true / false. Anything else is refused, not coerced: a
 * string 'false' is truthy and would silently mean true.
 */
export function optionalBoolean(value: unknown, name: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') throw new InvalidArgumentError(`${name}: expected true or false, got ${describeArgument(value)}`);
  return value;
}

/**
 * Whether two arrays may share bytes: views of one buffer whose ranges intersect, or of two
 * SharedArrayBuffers, which can be two objects over the same memory (one posted to this thread
 * twice, a shared WebAssembly.Memory's buffer before and after grow) with offsets that say nothing.
 */
export function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.buffer !== b.buffer) return a.buffer instanceof SharedArrayBuffer && b.buffer instanceof SharedArrayBuffer;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}
