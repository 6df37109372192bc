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

  it("precision 'bf16': the product of the operands rounded to bf16 (nearest even), summed in fp32", async () => {
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    const bf16 = (x: number) => {
      f[0] = x;
      bits[0] = (bits[0] + 0x7fff + ((bits[0] >>> 16) & 1)) & 0xffff0000;
      return f[0];
    };
    const rand = mulberry32(5);
    const [m, n, k] = [9, 37, 301];
    const a = new Float32Array(m * k).map(() => rand() - 0.5);
    const b = new Float32Array(n * k).map(() => rand() - 0.5);
    const c = await denseGemm({ a, b, m, n, k, transB: true, precision: 'bf16' });
    const ref = reference(a.map(bf16), b.map(bf16), m, n, k, false, true);
    const plain = reference(a, b, m, n, k, false, true);
    let maxErr = 0;
    let maxMove = 0;
    for (let i = 0; i < m * n; i++) {
      maxErr = Math.max(maxErr, Math.abs(c[i] - ref[i]));
      maxMove = Math.max(maxMove, Math.abs(c[i] - plain[i]));
    }
    expect(maxErr).toBeLessThanOrEqual(1e-5 * k * 0.25); // fp32 sums of exact products
    expect(maxMove).toBeGreaterThan(1e-3); // the rounding is real: 2^-9 relative per operand
    await expect(denseGemm({ a, b, m, n, k, transB: true, precision: 'fp16' as 'bf16' })).rejects.toThrow(InvalidArgumentError);
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
