import { describe, expect, it } from 'vitest';

import { denseGemm, fmaPeakGflops, InvalidArgumentError } from '../dist/index.js';
import { mulberry32 } from './helpers/random.js';

function reference(a: Float32Array, b: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      out[i * n + j] = acc;
    }
  return out;
}

describe('denseGemm', () => {
  it('matches a float64 reference for all transposes and odd sizes', async () => {
    const rand = mulberry32(3);
    for (const [m, n, k] of [[1, 1, 1], [13, 29, 300], [70, 17, 5]]) {
      for (const transA of [false, true])
        for (const transB of [false, true]) {
          const a = new Float32Array(m * k).map(() => rand() - 0.5);
          const b = new Float32Array(k * n).map(() => rand() - 0.5);
          const c = await denseGemm({ a, b, m, n, k, transA, transB });
          const ref = reference(a, b, m, n, k, transA, transB);
          for (let i = 0; i < m * n; i++) expect(Math.abs(c[i] - ref[i])).toBeLessThanOrEqual(1e-5 * k);
        }
    }
  });

  it('accumulates into c with alpha, beta and strides', async () => {
    const a = Float32Array.from([1, 2, 9, 3, 4, 9]); // [2,2] with lda 3
    const b = Float32Array.from([1, 0, 0, 1]);
    const c = Float32Array.from([10, 10, -1, 10, 10]); // [2,2] with ldc 3
    const out = await denseGemm({ a, b, m: 2, n: 2, k: 2, lda: 3, ldc: 3, c, alpha: 2, beta: 0.5 });
    expect(out).toBe(c);
    expect(Array.from(c)).toEqual([7, 9, -1, 11, 13]);
  });

  it('rejects bad shapes with typed errors naming the argument', async () => {
    const a = new Float32Array(6);
    await expect(denseGemm({ a, b: new Float32Array(5), m: 2, n: 2, k: 3 })).rejects.toThrow(/b: expected at least 6/);
    await expect(denseGemm({ a, b: a, m: -1, n: 2, k: 3 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(denseGemm({ a, b: a, m: 2, n: 2, k: 3, lda: 2 })).rejects.toThrow(/lda: expected an integer >= 3/);
  });

  it('measures a positive FMA ceiling', async () => {
    const peak = await fmaPeakGflops({ secondsPerRep: 0.01, reps: 1 });
    expect(peak).toBeGreaterThan(0.1);
  });
});
