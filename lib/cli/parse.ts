/** Option parsers for commander that reject bad values with the option named. */
import { InvalidArgumentError as CommanderInvalidArgument } from 'commander';

export function intIn(option: string, allowed: readonly number[]): (value: string) => number {
  return (value) => {
    const n = /^-?[0-9]+$/.test(value) ? Number(value) : NaN;
    if (!allowed.includes(n)) throw new CommanderInvalidArgument(`${option} expects one of ${allowed.join(', ')}, got "${value}"`);
    return n;
  };
}

/**
 * One decimal integer from `min` (default 1) to `max` in plain digits: no sign, exponent, hex,
 * spaces, or a second value after a comma.
 */
function decimal(option: string, text: string, value: string, max: number, expects: string, list = false, min = 1): number {
  if (!/^[0-9]+$/.test(text)) {
    const why = value === '' ? 'an empty value' : text === '' ? `an empty item in "${value}"` : `"${value}"`;
    throw new CommanderInvalidArgument(`${option} expects ${expects}, got ${why}`);
  }
  const n = Number(text);
  if (n < min || n > max) throw new CommanderInvalidArgument(`${option} expects ${expects}, ${list ? 'each ' : ''}from ${min} to ${max}, got "${value}"`);
  return n;
}

/**
 * A positive integer in decimal digits only, from `min` to `max`: Number() would also take "0x10",
 * "1e3", " 8 " and "" (0).
 */
export function positiveDecimal(option: string, max = Number.MAX_SAFE_INTEGER, min = 1): (value: string) => number {
  return (value) => decimal(option, value, value, max, 'one positive decimal integer', false, min);
}

/** A comma-separated list of positive decimal integers, each at most `max`; never empty. */
export function positiveDecimalList(option: string, max = Number.MAX_SAFE_INTEGER): (value: string) => number[] {
  const expects = 'positive decimal integers separated by commas';
  return (value) => {
    if (value === '') decimal(option, value, value, max, expects, true);
    return value.split(',').map((s) => decimal(option, s, value, max, expects, true));
  };
}

/**
 * A file or folder path. commander takes the word after an option as its value even when that is
 * the next option (`--out --json` named a folder "--json" and quantized into it): refused.
 */
export function pathValue(option: string): (value: string) => string {
  return (value) => {
    if (value.startsWith('--')) {
      throw new CommanderInvalidArgument(`${option} expects a path, got "${value}", an option: its value is missing (write ./${value} for a path of that name)`);
    }
    return value;
  };
}
