/** Calibration statistics (REFERENCE.md section 4). */
import { InvalidArgumentError } from '../errors.js';
import { checkDevice, describeValue, optionsObject } from '../validate.js';
import { native } from '../native.js';

/**
 * Mean absolute activation per input channel of a row-major `[rows, cols]` matrix: the
 * `x_mean` the scale search raises to the power alpha. NaN or Inf is a `NonFiniteError`
 * naming the row and channel.
 */
export async function activationStats(
  x: Float32Array,
  rows: number,
  cols: number,
  options?: { device?: 'cpu' | 'cuda' },
): Promise<Float32Array> {
  // the addon takes anything but 'cuda' for the CPU: a misspelt device must not run there silently
  const device = checkDevice(optionsObject(options, 'options').device);
  if (!(x instanceof Float32Array)) {
    throw new InvalidArgumentError(`x: expected a Float32Array, got ${describeValue(x)}`);
  }
  for (const [name, v] of [['rows', rows], ['cols', cols]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${name}: expected a positive integer, got ${v}`);
  }
  if (x.length !== rows * cols) {
    throw new InvalidArgumentError(`x: expected rows*cols = ${rows * cols} elements, got ${x.length}`);
  }
  return native().activationStats(x, rows, cols, device);
}

