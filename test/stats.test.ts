import { describe, expect, it } from 'vitest';

import { activationStats, InvalidArgumentError, NonFiniteError } from '../dist/index.js';
import { mulberry32 } from './helpers/random.js';

function referenceAbsMean(x: Float32Array, rows: number, cols: number): Float64Array {
  const m = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) m[j] += Math.abs(x[r * cols + j]);
  for (let j = 0; j < cols; j++) m[j] /= rows;
  return m;
}

describe('activationStats', () => {
  it('matches a float64 reference on random data with an outlier channel', async () => {
    const rand = mulberry32(7);
    for (const [rows, cols] of [[1, 1], [5, 13], [700, 96], [1031, 257]]) {
      const x = new Float32Array(rows * cols).map(() => (rand() - 0.5) * 6);
      for (let r = 0; r < rows; r++) x[r * cols + (cols >> 1)] *= 500;
      const got = await activationStats(x, rows, cols);
      const ref = referenceAbsMean(x, rows, cols);
      for (let j = 0; j < cols; j++) expect(Math.abs(got[j] - ref[j])).toBeLessThanOrEqual(1e-5 * ref[j] + 1e-7);
    }
  });

  it('gives zero for all-zero channels', async () => {
    const got = await activationStats(new Float32Array(64 * 8), 64, 8);
    expect(Array.from(got)).toEqual(new Array(8).fill(0));
  });

  it('rejects NaN and Inf with a NonFiniteError naming row and channel, and the caller in the stack', async () => {
    const x = new Float32Array(300 * 20).fill(1);
    x[123 * 20 + 19] = Number.NaN;
    const err = await activationStats(x, 300, 20).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as NonFiniteError).code).toBe('ERR_AWQ_NON_FINITE');
    expect((err as Error).message).toContain('row 123, channel 19');
    expect((err as Error).stack).toContain('stats.test.ts');
    x[123 * 20 + 19] = Number.POSITIVE_INFINITY;
    await expect(activationStats(x, 300, 20)).rejects.toBeInstanceOf(NonFiniteError);
  });

  it('validates arguments before native work', async () => {
    await expect(activationStats(new Float32Array(10), 3, 3)).rejects.toThrow(InvalidArgumentError);
    await expect(activationStats(new Float64Array(9) as unknown as Float32Array, 3, 3)).rejects.toThrow(/Float32Array/);
    await expect(activationStats(new Float32Array(0), 0, 3)).rejects.toThrow(/rows/);
  });

  it('does not block the event loop', async () => {
    const rows = 4096, cols = 2048;
    const x = new Float32Array(rows * cols).fill(0.5);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const p = activationStats(x, rows, cols);
    await new Promise((r) => setTimeout(r, 0));
    await p;
    clearInterval(timer);
    expect(ticks).toBeGreaterThanOrEqual(0);
    expect((await p)[0]).toBeCloseTo(0.5, 6);
  });
});
