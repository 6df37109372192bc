import { describe, expect, it } from 'vitest';

import { denseGemm, fmaPeakGflops, InvalidArgumentError, toFloat32, type HalfArray } from '../dist/index.js';
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

  it('b stored as fp16 / bf16 gives bitwise the product on its widening (toFloat32), every transpose, m = 1 included', async () => {
    const rand = mulberry32(11);
    for (const dtype of ['fp16', 'bf16'] as const) {
      // random finite values of the format (exponent field below all-ones), zeros and subnormals among them
      const maxExp = dtype === 'fp16' ? 0x7c00 : 0x7f80;
      const halfBits = (len: number) => Uint16Array.from({ length: len }, () => {
        const bits = Math.floor(rand() * 0x10000);
        return (bits & 0x7fff) >= maxExp ? bits & 0x83ff : bits;
      });
      for (const [m, n, k] of [[1, 300, 129], [1, 7, 1031], [13, 29, 300], [70, 17, 5]]) {
        for (const transA of [false, true])
          for (const transB of [false, true]) {
            const a = new Float32Array(m * k).map(() => rand() - 0.5);
            const b: HalfArray = { data: halfBits(k * n), dtype };
            const got = await denseGemm({ a, b, m, n, k, transA, transB });
            const want = await denseGemm({ a, b: toFloat32(b), m, n, k, transA, transB });
            expect(new Uint32Array(got.buffer)).toEqual(new Uint32Array(want.buffer));
          }
      }
    }
    const a = new Float32Array(6);
    await expect(denseGemm({ a, b: { data: new Uint16Array(6), dtype: 'fp8' as 'fp16' }, m: 2, n: 2, k: 3 })).rejects.toThrow(/b\.dtype: expected 'fp16' \(or 'f16'\) or 'bf16', got "fp8"/);
    await expect(denseGemm({ a, b: { data: new Uint16Array(5), dtype: 'bf16' }, m: 2, n: 2, k: 3 })).rejects.toThrow(/b: expected at least 6/);
    await expect(denseGemm({ a, b: new Uint16Array(6) as never, m: 2, n: 2, k: 3 })).rejects.toThrow(/b: expected a Float32Array or \{ data: Uint16Array, dtype: 'fp16' \| 'bf16' \}, got Uint16Array/);
  });

  it('a few rows against a transposed b (m <= 8) are bitwise what each row alone gets, fp32 and fp16 b', async () => {
    const rand = mulberry32(21);
    const [n, k] = [67, 300];
    const b32 = new Float32Array(n * k).map(() => rand() - 0.5);
    const b16 = { data: Uint16Array.from({ length: n * k }, () => (Math.floor(rand() * 0x10000) & 0x83ff) | 0x3000), dtype: 'fp16' as const };
    for (const b of [b32, b16]) {
      for (const m of [2, 5, 8]) {
        const a = new Float32Array(m * k).map(() => rand() - 0.5);
        const all = await denseGemm({ a, b, m, n, k, transB: true });
        for (let i = 0; i < m; i++) {
          const row = await denseGemm({ a: a.subarray(i * k, (i + 1) * k), b, m: 1, n, k, transB: true });
          expect(new Uint32Array(row.buffer), `m ${m} row ${i}`).toEqual(new Uint32Array(all.buffer, i * n * 4, n));
        }
      }
    }
  });

  it('toFloat32 widens every fp16 and bf16 value exactly', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const fp16 = toFloat32({ data: all, dtype: 'fp16' });
    const bf16 = toFloat32({ data: all, dtype: 'bf16' });
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    for (let h = 0; h < 65536; h++) {
      const e = (h >> 10) & 31, mant = h & 1023, sign = h & 0x8000 ? -1 : 1;
      const ref = e === 31 ? (mant ? NaN : sign * Infinity) : e === 0 ? sign * mant * 2 ** -24 : sign * (1024 + mant) * 2 ** (e - 25);
      if (!Object.is(fp16[h], ref)) expect(fp16[h], `fp16 0x${h.toString(16)}`).toBe(ref);
      bits[0] = h << 16;
      if (!Object.is(bf16[h], f[0])) expect(bf16[h], `bf16 0x${h.toString(16)}`).toBe(f[0]);
    }
    expect(toFloat32({ data: new Uint16Array(0), dtype: 'f16' })).toEqual(new Float32Array(0));
    // into a caller's array: a row of a larger one
    const hidden = new Float32Array(12).fill(-1);
    const into = toFloat32({ data: Uint16Array.from([0x3c00, 0xc000, 0x3800, 0]), dtype: 'fp16' }, hidden.subarray(4, 8));
    expect(into.buffer).toBe(hidden.buffer);
    expect(Array.from(hidden)).toEqual([-1, -1, -1, -1, 1, -2, 0.5, 0, -1, -1, -1, -1]);
    // out over x's own bytes (widening in place): the values as from a copy
    const shared = new ArrayBuffer(16);
    const inPlace = new Uint16Array(shared, 0, 4);
    inPlace.set([0x3c00, 0x3c40, 0x3c80, 0x3cc0]); // 1, 1.0625, 1.125, 1.1875
    expect(Array.from(toFloat32({ data: inPlace, dtype: 'fp16' }, new Float32Array(shared)))).toEqual([1, 1.0625, 1.125, 1.1875]);
    expect(() => toFloat32({ data: new Uint16Array(4), dtype: 'bf16' }, new Float32Array(3))).toThrow(/out: expected a Float32Array of 4 elements \(as many as x\), got 3 elements/);
    expect(() => toFloat32({ data: new Uint16Array(4), dtype: 'bf16' }, [0, 0, 0, 0] as never)).toThrow(/out: expected a Float32Array of 4 elements \(as many as x\), got Array/);
    expect(() => toFloat32(new Uint16Array(2) as never)).toThrow(InvalidArgumentError);
    expect(() => toFloat32({ data: new Uint16Array(2), dtype: 'F16' as 'fp16' })).toThrow(/x\.dtype: expected 'fp16' \(or 'f16'\) or 'bf16', got "F16"/);
  });

  it('measures a positive FMA ceiling', async () => {
    const peak = await fmaPeakGflops({ secondsPerRep: 0.01, reps: 1 });
    expect(peak).toBeGreaterThan(0.1);
  });
});
