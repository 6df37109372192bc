/** Option parsers for commander that reject bad values with the option named. */
import { InvalidArgumentError as CommanderInvalidArgument } from 'commander';

export function positiveInt(option: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new CommanderInvalidArgument(`${option} expects a positive integer, got "${value}"`);
    return n;
  };
}

export function intIn(option: string, allowed: readonly number[]): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!allowed.includes(n)) throw new CommanderInvalidArgument(`${option} expects one of ${allowed.join(', ')}, got "${value}"`);
    return n;
  };
}
