import { existsSync, readFileSync } from 'node:fs';

import { describe, expect, it, vi } from 'vitest';

import { backends, CudaError, Int4Linear, InvalidArgumentError, NonFiniteError, type AwqLinearTensors } from '../dist/index.js';
import { native } from '../dist/native.js';
import { mulberry32 } from './helpers/random.js';

// ---- fp16 / bf16 helpers (independent of the native conversions) ----
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function fp16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
/** Rounds to the nearest fp16 (values in the normal range used here). */
function f32ToFp16(v: number): number {
  const s = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === 0) return s;
  let e = Math.floor(Math.log2(a));
  if (e < -14) return s | Math.round(a / 2 ** -24);
  let m = Math.round((a / 2 ** e - 1) * 1024);
  if (m === 1024) (m = 0), e++;
  return s | ((e + 15) << 10) | m;
}
function bf16ToF32(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

interface Layer {
  inF: number; outF: number; group: number;
  q: Uint8Array; zeros: Uint8Array; scales: Float32Array; scales16: Uint16Array; bias?: Float32Array; bias16?: Uint16Array;
}

function randomLayer(inF: number, outF: number, group: number, seed: number, bias = false): Layer {
  const rand = mulberry32(seed);
  const groups = inF / group;
  const q = new Uint8Array(outF * inF).map(() => Math.floor(rand() * 16));
  const zeros = new Uint8Array(outF * groups).map(() => Math.floor(rand() * 16));
  const scales16 = new Uint16Array(outF * groups).map(() => f32ToFp16(0.001 + rand() * 0.05));
  const scales = Float32Array.from(scales16, fp16ToF32);
  const layer: Layer = { inF, outF, group, q, zeros, scales, scales16 };
  if (bias) {
    layer.bias16 = new Uint16Array(outF).map(() => f32ToFp16((rand() - 0.5) * 2));
    layer.bias = Float32Array.from(layer.bias16, fp16ToF32);
  }
  return layer;
}

const ORDER = [0, 2, 4, 6, 1, 3, 5, 7];
/** AutoAWQ packing (REFERENCE.md section 6) of a layer: scales transposed, 8 columns per int32. */
function toAwq(L: Layer, name = 'test.proj'): AwqLinearTensors {
  const cols = L.outF / 8, groups = L.inF / L.group;
  const pack = (get: (n: number, r: number) => number, rows: number) => {
    const out = new Int32Array(rows * cols);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        let word = 0;
        for (let i = 0; i < 8; i++) word |= get(8 * c + ORDER[i], r) << (4 * i);
        out[r * cols + c] = word;
      }
    return out;
  };
  const scales = new Uint16Array(groups * L.outF);
  for (let g = 0; g < groups; g++) for (let n = 0; n < L.outF; n++) scales[g * L.outF + n] = L.scales16[n * groups + g];
  return {
    name, inFeatures: L.inF, outFeatures: L.outF, groupSize: L.group,
    qweight: pack((n, k) => L.q[n * L.inF + k], L.inF),
    qzeros: pack((n, g) => L.zeros[n * groups + g], groups),
    scales,
    ...(L.bias16 ? { bias: L.bias16 } : {}),
  };
}

function dequantRef(L: Layer): Float64Array {
  const groups = L.inF / L.group;
  const w = new Float64Array(L.outF * L.inF);
  for (let n = 0; n < L.outF; n++)
    for (let k = 0; k < L.inF; k++) {
      const g = n * groups + Math.floor(k / L.group);
      w[n * L.inF + k] = (L.q[n * L.inF + k] - L.zeros[g]) * L.scales[g];
    }
  return w;
}

/** Largest |y - ref| minus the fp32 bound (in + 2) * eps * sum |x w|: <= 0 when all are within. */
function excess(x: ArrayLike<number>, m: number, w: Float64Array, inF: number, outF: number, y: Float32Array, bias?: Float32Array): number {
  let worst = -Infinity;
  for (let i = 0; i < m; i++)
    for (let n = 0; n < outF; n++) {
      let ref = bias ? bias[n] : 0, mag = Math.abs(ref);
      for (let k = 0; k < inF; k++) {
        const p = x[i * inF + k] * w[n * inF + k];
        ref += p;
        mag += Math.abs(p);
      }
      worst = Math.max(worst, Math.abs(y[i * outF + n] - ref) - (inF + 2) * 2 ** -23 * mag);
    }
  return worst;
}

/**
 * The int8 mode's documented bound, per output: |y - x W^T - b| <= sum over 128-blocks of
 * max|x_block| / 254 * sum|w_block| (1% and `slack` for fp32 rounding).
 */
function expectInt8Bound(x: Float32Array, m: number, w: Float64Array, inF: number, outF: number, y: Float32Array, bias: Float32Array | undefined, slack: number): void {
  for (let i = 0; i < m; i++)
    for (let n = 0; n < outF; n++) {
      let ref = bias ? bias[n] : 0, bound = 0;
      for (let b = 0; b < inF / 128; b++) {
        let amax = 0, wsum = 0;
        for (let k = b * 128; k < (b + 1) * 128; k++) {
          amax = Math.max(amax, Math.abs(x[i * inF + k]));
          wsum += Math.abs(w[n * inF + k]);
          ref += x[i * inF + k] * w[n * inF + k];
        }
        bound += (amax / 254) * wsum;
      }
      expect(Math.abs(y[i * outF + n] - ref)).toBeLessThanOrEqual(bound * 1.01 + slack);
    }
}

describe('Int4Linear', () => {
  it('fromAwq and fromQuantized hold the same weights: dequantize() is (q - z) * s exactly', async () => {
    const L = randomLayer(384, 48, 128, 1, true);
    const a = await Int4Linear.fromAwq(toAwq(L));
    const b = await Int4Linear.fromQuantized({ q: L.q, zeros: L.zeros, scales: L.scales, bias: L.bias, inFeatures: 384, outFeatures: 48, groupSize: 128 });
    const ref = Float32Array.from(dequantRef(L));
    expect(a.dequantize()).toEqual(ref);
    expect(b.dequantize()).toEqual(ref);
    expect([a.inFeatures, a.outFeatures, a.groupSize, a.name]).toEqual([384, 48, 128, 'test.proj']);
    expect(a.awq?.qweight).toBeInstanceOf(Int32Array);
    expect(b.awq).toBeNull();
    // 0.5 byte per weight, an fp16 scale per group and row, the 3 groups' zeros in 2 bytes per
    // row, 4 bytes per bias entry, and 16 entries of padding after the scales and the zeros
    expect(a.nativeBytes).toBe((384 * 48) / 2 + 48 * 3 * 2 + 48 * 2 + 48 * 4 + 16 * 2 + 16);
  });

  it('forward matches a float64 reference for f32, f16 and bf16 inputs, async and sync, decode and prefill sizes', async () => {
    const rand = mulberry32(5);
    for (const [m, inF, outF, group] of [[1, 256, 16, 128], [3, 208, 24, 16], [9, 512, 40, -1], [17, 640, 72, 64]]) {
      const L = randomLayer(inF, outF, group === -1 ? inF : group, 10 + m, m % 2 === 1);
      const lin = await Int4Linear.fromAwq({ ...toAwq(L), groupSize: group });
      const w = dequantRef(L);
      const x = new Float32Array(m * inF).map(() => (rand() - 0.5) * 4);
      x[inF >> 1] *= 300; // an outlier channel
      const y = await lin.forward(x, m);
      expect(excess(x, m, w, inF, outF, y, L.bias)).toBeLessThanOrEqual(0);
      expect(lin.forwardSync(x, m)).toEqual(y);

      const h = Uint16Array.from(x, f32ToFp16);
      const yh = await lin.forward({ data: h, dtype: 'f16' }, m);
      expect(excess(Array.from(h, fp16ToF32), m, w, inF, outF, yh, L.bias)).toBeLessThanOrEqual(0);
      expect(lin.forwardSync({ data: h, dtype: 'fp16' }, m)).toEqual(yh); // 'fp16', as precision spells it
      const b = Uint16Array.from(x, (v) => (f32[0] = v, u32[0] >>> 16));
      const yb = lin.forwardSync({ data: b, dtype: 'bf16' }, m);
      expect(excess(Array.from(b, bf16ToF32), m, w, inF, outF, yb, L.bias)).toBeLessThanOrEqual(0);
    }
  });

  it('int8 mode stays within its documented bound', async () => {
    const rand = mulberry32(9);
    const L = randomLayer(512, 32, 128, 3, true);
    const lin = await Int4Linear.fromAwq(toAwq(L));
    const w = dequantRef(L);
    for (const m of [1, 6]) {
      const x = new Float32Array(m * 512).map(() => (rand() - 0.5) * 2);
      x[100] = 40;
      const y = await lin.forward(x, m, { mode: 'int8' });
      expectInt8Bound(x, m, w, 512, 32, y, L.bias, 1e-5);
    }
  });

  it('int8 mode keeps its bound for blocks of tiny activations (127 / max|x| beyond fp32)', async () => {
    // Each 128-block at another scale down to subnormals: 127 / max|x| overflowed below 3.7e-37,
    // and 0 * inf turned zeros into -127 (errors 56x the bound, of the wrong sign).
    const rand = mulberry32(21);
    const L = randomLayer(512, 16, 128, 5, false);
    const lin = await Int4Linear.fromAwq(toAwq(L));
    const w = dequantRef(L);
    const scales = [1e-37, 2e-39, 5e-36, 3e-38];
    for (const m of [1, 3]) {
      const x = new Float32Array(m * 512).map((_, i) => (i % 5 === 0 ? 0 : (rand() - 0.5) * 2 * scales[Math.floor((i % 512) / 128)]));
      const y = await lin.forward(x, m, { mode: 'int8' });
      expect(lin.forwardSync(x, m, { mode: 'int8' })).toEqual(y);
      expectInt8Bound(x, m, w, 512, 16, y, undefined, 1e-44);
    }
  });

  it('forwardSync with out over x (one buffer reused in place) gives the right product', async () => {
    const L = randomLayer(256, 256, 128, 6, true);
    const lin = await Int4Linear.fromAwq(toAwq(L));
    for (const m of [1, 2, 4, 16, 17, 40]) {
      const buf = new Float32Array(m * 256).map((_, i) => Math.sin(i * 0.37));
      const want = lin.forwardSync(buf.slice(), m);
      expect(lin.forwardSync(buf, m, { out: buf })).toBe(buf);
      expect(buf).toEqual(want);
      // a view into the same memory, shifted
      const big = new Float32Array(m * 256 + 64).map((_, i) => Math.cos(i * 0.11));
      const x = big.subarray(0, m * 256);
      const want2 = lin.forwardSync(x.slice(), m);
      const out = big.subarray(64, 64 + m * 256);
      lin.forwardSync(x, m, { out });
      expect(out).toEqual(want2);
      // two SharedArrayBuffer objects over one memory (a shared WebAssembly.Memory's buffer before
      // and after grow): no offsets to compare, so x is copied (the kernel overwrote it while reading)
      const mem = new WebAssembly.Memory({ initial: 1, maximum: 2, shared: true });
      const before = mem.buffer;
      mem.grow(1);
      const xs = new Float32Array(before, 0, m * 256);
      xs.set(buf.map((_, i) => Math.sin(i * 0.29)));
      const want3 = lin.forwardSync(xs.slice(), m);
      const outs = new Float32Array(mem.buffer, 0, m * 256);
      lin.forwardSync(xs, m, { out: outs });
      expect(outs).toEqual(want3);
    }
    await expect(lin.forward(new Float32Array(256), 1, null as never)).rejects.toThrow(InvalidArgumentError);
  });

  it('writes into a caller-provided output and rejects NaN activations with a NonFiniteError', async () => {
    const L = randomLayer(128, 8, 128, 4);
    const lin = await Int4Linear.fromAwq(toAwq(L));
    const out = new Float32Array(2 * 8);
    const x = new Float32Array(2 * 128).fill(0.25);
    expect(await lin.forward(x, 2, { out })).toBe(out);
    x[128 + 7] = NaN;
    const err = await lin.forward(x, 2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toContain('row 1, column 7');
    expect(() => lin.forwardSync(x, 2)).toThrow(NonFiniteError);
    // a named layer (as loadAwq builds them) says which one refused the input, as for a wrong shape
    const named = await Int4Linear.fromAwq({ ...toAwq(L), name: 'model.layers.3.mlp.down_proj' });
    await expect(named.forward(x, 2)).rejects.toThrow(/^model\.layers\.3\.mlp\.down_proj: x: .*row 1, column 7/);
    expect(() => named.forwardSync(x, 2)).toThrow(/^model\.layers\.3\.mlp\.down_proj: x: .*row 1, column 7/);
    await named.dispose();
    // Finite but past the fp32 group sums' range: an M = 1 decode returned Inf (the answer was
    // finite) and the AVX2 int8 decode NaN; now an error at every M and mode, not a wrong result.
    for (const m of [1, 2, 20]) {
      for (const mode of ['exact', 'int8'] as const) {
        const big = new Float32Array(m * 128).fill(0.25);
        big[(m - 1) * 128 + 3] = -1e38;
        const e = await lin.forward(big, m, { mode }).catch((v: unknown) => v);
        expect(e, `m ${m} ${mode}`).toBeInstanceOf(InvalidArgumentError);
        expect((e as Error).message).toBe(`test.proj: x: value at row ${m - 1}, column 3 is -1e+38: beyond the int4 kernels' input range, |x| <= 2^100 (about 1.3e30; their fp32 group sums would overflow)`);
        big[(m - 1) * 128 + 3] = -(2 ** 100); // the largest magnitude taken: finite results
        const y = lin.forwardSync(big, m, { mode });
        expect(y.every(Number.isFinite), `m ${m} ${mode}`).toBe(true);
      }
    }
    const bf16 = { data: new Uint16Array(128).fill(0x7f7f), dtype: 'bf16' as const }; // bf16's largest, 3.39e38
    await expect(lin.forward(bf16, 1)).rejects.toThrow(/beyond the int4 kernels' input range/);
  });

  it('callers may transfer their buffers while forward and the packing run: native code holds copies', async () => {
    const L = randomLayer(512, 64, 128, 9);
    const tensors = toAwq(L);
    const building = Int4Linear.fromAwq(tensors);
    structuredClone(tensors.qweight.buffer, { transfer: [tensors.qweight.buffer] });
    const lin = await building;
    const same = await Int4Linear.fromAwq(toAwq(L));
    expect(lin.dequantize()).toEqual(same.dequantize());

    const m = 64;
    const x = new Float32Array(m * 512).map((_, i) => Math.sin(i));
    const expected = lin.forwardSync(x, m);
    const pending = lin.forward(x, m);
    structuredClone(x.buffer, { transfer: [x.buffer] }); // x is now detached (length 0)
    expect(x.length).toBe(0);
    expect(await pending).toEqual(expected);

    const out = new Float32Array(m * 64);
    const writing = lin.forward(new Float32Array(m * 512).fill(1), m, { out });
    structuredClone(out.buffer, { transfer: [out.buffer] });
    await expect(writing).rejects.toThrow(InvalidArgumentError);
    await expect(lin.forward(new Float32Array(m * 512).fill(1), m, { out: new Float32Array(m * 64) })).resolves.toHaveLength(m * 64);
  });

  it('rejects bad input with typed errors before native work', async () => {
    const L = randomLayer(256, 16, 128, 6);
    const t = toAwq(L);
    const bad = async (patch: Partial<AwqLinearTensors>) => Int4Linear.fromAwq({ ...t, ...patch });
    await expect(bad({ qweight: new Uint32Array(t.qweight) as unknown as Int32Array })).rejects.toThrow(/qweight: expected a Int32Array/);
    await expect(bad({ qweight: t.qweight.subarray(1) })).rejects.toThrow(InvalidArgumentError);
    await expect(bad({ groupSize: 96 })).rejects.toThrow(/multiple of groupSize/);
    await expect(bad({ groupSize: 8, inFeatures: 256 })).rejects.toThrow(/multiple of 16/);
    await expect(bad({ outFeatures: 12 })).rejects.toThrow(/multiple of 8/);
    await expect(bad({ qzeros: new Int32Array(5) })).rejects.toThrow(/qzeros: expected \[2, 2\]/);
    await expect(bad({ scales: new Uint16Array(16) })).rejects.toThrow(/scales: expected \[2, 16\]/);
    const nanScales = t.scales.slice();
    nanScales[17] = 0x7e00;
    await expect(bad({ scales: nanScales })).rejects.toThrow(NonFiniteError);
    await expect(bad({ scales: nanScales })).rejects.toThrow(/scales\[1, 1\] is NaN/);
    await expect(Int4Linear.fromQuantized({ q: new Uint8Array(16 * 256).fill(16), zeros: L.zeros, scales: L.scales, inFeatures: 256, outFeatures: 16, groupSize: 128 }))
      .rejects.toThrow(/not in 0\.\.15/);
    // Scales are held as fp16, as the checkpoint stores them: other values round to the nearest
    // fp16, and one past fp16's range is a NonFiniteError.
    const ones = { q: new Uint8Array(8 * 128).fill(1), zeros: new Uint8Array(8), inFeatures: 128, outFeatures: 8, groupSize: 128 };
    const rounded = await Int4Linear.fromQuantized({ ...ones, scales: new Float32Array(8).fill(0.1) });
    expect(rounded.dequantize()[5]).toBe(0.0999755859375);  // fp16(0.1)
    await expect(Int4Linear.fromQuantized({ ...ones, scales: new Float32Array(8).fill(70000) })).rejects.toThrow(NonFiniteError);
    await expect(Int4Linear.fromQuantized({ ...ones, scales: new Float32Array(8).fill(70000) })).rejects.toThrow(/scales\[0, 0\] = 70000.* beyond fp16's range/);

    const lin = await Int4Linear.fromAwq(t);
    expect(() => lin.forwardSync(new Float32Array(255), 1)).toThrow(/x: expected m \* inFeatures/);
    expect(() => lin.forwardSync(new Float64Array(256) as unknown as Float32Array, 1)).toThrow(InvalidArgumentError);
    expect(() => lin.forwardSync({ data: new Uint16Array(256), dtype: 'fp8' as 'f16' }, 1)).toThrow(/dtype/);
    expect(() => lin.forwardSync(new Float32Array(256), 0)).toThrow(/x: expected m \* inFeatures = 0 \* 256 = 0 elements, got 256/);
    expect(() => lin.forwardSync(new Float32Array(256), -1)).toThrow(/m: expected an integer >= 0, got -1/);
    // An empty batch (a server's idle step) is an empty product, without a native call.
    expect(lin.forwardSync(new Float32Array(0), 0)).toEqual(new Float32Array(0));
    const none = new Float32Array(0);
    expect(await lin.forward(new Float32Array(0), 0, { out: none })).toBe(none);
    await expect(lin.forward(new Float32Array(0), 0, { out: new Float32Array(1) })).rejects.toThrow(/out:/);
    await expect(lin.forward(new Float32Array(256), 1, { out: new Float32Array(3) })).rejects.toThrow(/out:/);
    await expect(lin.forward(new Float32Array(256), 1, { mode: 'fast' as 'exact' })).rejects.toThrow(/mode/);
    const small = await Int4Linear.fromQuantized({ q: new Uint8Array(8 * 64), zeros: new Uint8Array(8), scales: new Float32Array(8).fill(1), inFeatures: 64, outFeatures: 8, groupSize: 64 });
    await expect(small.forward(new Float32Array(64), 1, { mode: 'int8' })).rejects.toThrow(/multiple of 128/);
  });

  const ckpt = '../shared/models/llama-22m-awq/model.safetensors';
  it.skipIf(!existsSync(ckpt))('loads a real AutoAWQ linear (llama-22m-awq) and multiplies it like the reference unpacking', async () => {
    // A minimal safetensors read (8-byte header length, JSON header, raw data) of one linear.
    const buf = readFileSync(ckpt);
    const hlen = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + hlen).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const name = 'model.layers.0.mlp.down_proj';
    const view = <T>(key: string, Ctor: new (b: ArrayBuffer, o: number, n: number) => T, size: number): T => {
      const [a, b] = header[`${name}.${key}`].data_offsets;
      const copy = buf.buffer.slice(buf.byteOffset + 8 + hlen + a, buf.byteOffset + 8 + hlen + b);
      return new Ctor(copy, 0, (b - a) / size);
    };
    const [inF, cols] = header[`${name}.qweight`].shape;
    const outF = cols * 8;
    const t: AwqLinearTensors = {
      name, inFeatures: inF, outFeatures: outF, groupSize: 128,
      qweight: view('qweight', Int32Array, 4), qzeros: view('qzeros', Int32Array, 4), scales: view('scales', Uint16Array, 2),
    };
    const lin = await Int4Linear.fromAwq(t);
    // Reference unpacking straight from REFERENCE.md section 6 (nibble of column v: [0,4,1,5,2,6,3,7][v]).
    const nib = [0, 4, 1, 5, 2, 6, 3, 7];
    const w = new Float64Array(outF * inF);
    for (let k = 0; k < inF; k++)
      for (let n = 0; n < outF; n++) {
        const g = Math.floor(k / 128);
        const q = (t.qweight[k * cols + (n >> 3)] >>> (4 * nib[n & 7])) & 15;
        const z = (t.qzeros[g * cols + (n >> 3)] >>> (4 * nib[n & 7])) & 15;
        w[n * inF + k] = (q - z) * fp16ToF32(t.scales[g * outF + n]);
      }
    expect(lin.dequantize()).toEqual(Float32Array.from(w));
    const rand = mulberry32(77);
    const x = new Float32Array(2 * inF).map(() => rand() - 0.5);
    expect(excess(x, 2, w, inF, outF, await lin.forward(x, 2))).toBeLessThanOrEqual(0);
  });
});

describe('Int4Linear.dispose', () => {
  it('drops the native weights; later calls are InvalidArgumentErrors naming the layer; twice is harmless', async () => {
    const L = randomLayer(256, 16, 128, 5);
    const lin = await Int4Linear.fromAwq(toAwq(L, 'model.layers.0.mlp.up_proj'));
    const x = new Float32Array(256).fill(0.5);
    const pending = lin.forward(x, 1); // started before dispose: completes
    expect(lin.nativeBytes).toBeGreaterThan(0);
    await lin.dispose();
    await lin.dispose();
    expect((await pending).length).toBe(16);
    expect(lin.nativeBytes).toBe(0);
    await expect(lin.forward(x, 1)).rejects.toThrow(/forward: model.layers.0.mlp.up_proj was disposed/);
    expect(() => lin.forwardSync(x, 1)).toThrow(InvalidArgumentError);
    expect(() => lin.dequantize()).toThrow(InvalidArgumentError);
  });
});

describe('Int4Linear building', () => {
  it('a native failure while repacking (out of memory) names the layer, from fromAwq and fromQuantized', async () => {
    const L = randomLayer(256, 16, 128, 7);
    const oom = () => Promise.reject(Object.assign(new Error('out of memory repacking 4096 bytes'), { code: 'ERR_AWQ_OUT_OF_MEMORY' }));
    const addon = native();
    for (const method of ['int4PackAwq', 'int4PackQuantized'] as const) {
      const spy = vi.spyOn(addon, method).mockImplementation(oom);
      try {
        const build = method === 'int4PackAwq'
          ? Int4Linear.fromAwq(toAwq(L, 'model.layers.2.mlp.gate_proj'))
          : Int4Linear.fromQuantized({ q: L.q, zeros: L.zeros, scales: L.scales, outFeatures: 16, inFeatures: 256, groupSize: 128, name: 'model.layers.2.mlp.gate_proj' });
        await expect(build).rejects.toThrow(/^model\.layers\.2\.mlp\.gate_proj: out of memory repacking 4096 bytes$/);
        expect(spy).toHaveBeenCalledTimes(1);
      } finally {
        spy.mockRestore();
      }
    }
  });
});

describe('Int4Linear on CUDA', () => {
  const cuda = backends().cuda;

  it('without a CUDA build or device, device \'cuda\' is a typed error saying why', async () => {
    if (cuda !== null) return; // covered by the test below on a CUDA machine
    const L = randomLayer(256, 16, 128, 3);
    await expect(Int4Linear.fromAwq(toAwq(L), { device: 'cuda' })).rejects.toThrow(CudaError);
    await expect(Int4Linear.fromAwq(toAwq(L), { device: 'tpu' as 'cuda' })).rejects.toThrow(InvalidArgumentError);
  });

  it.skipIf(cuda === null)('matches the float64 reference within fp16 rounding, decode and prefill sizes (skipped without a CUDA build and device)', async () => {
    const rand = mulberry32(77);
    for (const [m, inF, outF, group] of [[1, 256, 16, 128], [3, 384, 24, 32], [16, 512, 40, 128], [40, 640, 72, 64], [1, 256, 8, -1]]) {
      const L = randomLayer(inF, outF, group === -1 ? inF : group, 30 + m, m % 2 === 1);
      const lin = await Int4Linear.fromAwq({ ...toAwq(L), groupSize: group }, { device: 'cuda' });
      expect(lin.device).toBe('cuda');
      const w = dequantRef(L);
      const x = new Float32Array(m * inF).map(() => (rand() - 0.5) * 4);
      x[inF >> 1] *= 300;
      const xh = Array.from(Uint16Array.from(x, f32ToFp16), fp16ToF32); // what the kernels multiply
      const y = await lin.forward(x, m);
      for (let i = 0; i < m; i++)
        for (let n = 0; n < outF; n++) {
          let ref = L.bias ? L.bias[n] : 0, mag = Math.abs(ref);
          for (let k = 0; k < inF; k++) {
            ref += xh[i * inF + k] * w[n * inF + k];
            mag += Math.abs(xh[i * inF + k] * w[n * inF + k]);
          }
          expect(Math.abs(y[i * outF + n] - ref)).toBeLessThanOrEqual(2 ** -10 * mag + 1e-6);
        }
      expect(() => lin.forwardSync(x, m)).toThrow(InvalidArgumentError);
      expect(() => lin.dequantize()).toThrow(InvalidArgumentError);
      await expect(lin.forward(x, m, { mode: 'int8' })).rejects.toThrow(InvalidArgumentError);
      x[0] = NaN;
      await expect(lin.forward(x, m)).rejects.toThrow(NonFiniteError);
      x[0] = 1e6; // beyond fp16
      await expect(lin.forward(x, m)).rejects.toThrow(/fp16/);
      await lin.dispose();
      expect(lin.nativeBytes).toBe(0);
      await expect(lin.forward(new Float32Array(m * inF), m)).rejects.toThrow(/disposed/);
    }
  });

  it.skipIf(cuda === null)('a prefill past the cached buffers (m = 12000: dequantize + dense, per-call x / y) with a bias, then dispose (skipped without a CUDA build and device)', async () => {
    const [m, inF, outF] = [12000, 1024, 256];
    const L = randomLayer(inF, outF, 128, 91, true);
    const lin = await Int4Linear.fromAwq(toAwq(L), { device: 'cuda' });
    const w = dequantRef(L);
    const rand = mulberry32(91);
    const x = new Float32Array(m * inF).map(() => rand() - 0.5);
    const xh = Float32Array.from(Uint16Array.from(x, f32ToFp16), fp16ToF32);
    const y = await lin.forward(x, m);
    for (const i of [0, 4321, m - 1])
      for (let n = 0; n < outF; n++) {
        let ref = L.bias![n], mag = Math.abs(ref);
        for (let k = 0; k < inF; k++) {
          ref += xh[i * inF + k] * w[n * inF + k];
          mag += Math.abs(xh[i * inF + k] * w[n * inF + k]);
        }
        expect(Math.abs(y[i * outF + n] - ref)).toBeLessThanOrEqual(2 ** -10 * mag + 1e-6);
      }
    await Promise.all([lin.dispose(), lin.dispose()]);
    await expect(lin.forward(x, m)).rejects.toThrow(InvalidArgumentError);
  });
});
