import { describe, expect, it } from 'vitest';

import {
  AbortedError,
  backends,
  CudaError,
  decoderLayerForward,
  dequantizeAwq,
  Int4Linear,
  packAwq,
  InvalidArgumentError,
  lmHeadNll,
  NonFiniteError,
  pseudoQuantize,
  quantizeDecoderLayer,
  toFloat32,
  type LayerArch,
  type LayerWeights,
  type QuantOptions,
} from '../dist/index.js';
import { mulberry32 } from './helpers/random.js';

/** Nearest fp16 value of x (round half to even), for the float64 reference. */
function fp16Round(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const e = Math.max(Math.floor(Math.log2(Math.abs(x))), -14);
  const ulp = 2 ** (e - 10);
  const q = x / ulp;
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q)) === 0.5) r = 2 * Math.round(q / 2);
  return r * ulp;
}
const roundEven = (x: number) => {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : r;
};

function refPseudoQuant(w: Float32Array, rows: number, cols: number, bits: number, g: number): Float64Array {
  const out = new Float64Array(w.length);
  const qmax = 2 ** bits - 1;
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < cols; j += g) {
      const grp = Array.from(w.subarray(r * cols + j, r * cols + j + g));
      const mx = Math.max(...grp), mn = Math.min(...grp);
      const s = fp16Round(Math.fround(Math.max(Math.fround(mx - mn), Math.fround(1e-5)) / qmax));
      const z = Math.min(Math.max(-roundEven(mn / s), 0), qmax);
      for (let k = 0; k < g; k++) out[r * cols + j + k] = (Math.min(Math.max(roundEven(grp[k] / s) + z, 0), qmax) - z) * s;
    }
  return out;
}

function randomLayer(seed: number, H = 64, I = 128, nh = 4, nkv = 2, hd = 16): { arch: LayerArch; weights: LayerWeights } {
  const rand = mulberry32(seed);
  const arr = (n: number, scale: number, offset = 0) => Float32Array.from({ length: n }, () => offset + (rand() - 0.5) * 2 * scale);
  const inv = Float32Array.from({ length: hd / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / hd));
  const sc = 1 / Math.sqrt(H);
  return {
    arch: { hiddenSize: H, intermediateSize: I, numHeads: nh, numKvHeads: nkv, headDim: hd, rmsNormEps: 1e-5, ropeInvFreq: inv, qkNorm: false },
    weights: {
      inputNorm: arr(H, 0.5, 1), postNorm: arr(H, 0.5, 1),
      q: arr(nh * hd * H, 2 * sc), k: arr(nkv * hd * H, 2 * sc), v: arr(nkv * hd * H, sc), o: arr(H * nh * hd, sc),
      gate: arr(I * H, sc), up: arr(I * H, sc), down: arr(H * I, sc),
    },
  };
}

const AWQ: QuantOptions = { wBit: 4, groupSize: 32, zeroPoint: true, duoScaling: true, clip: true, method: 'awq' };

describe('pseudoQuantize', () => {
  it('matches a float64 reference with fp16 scales, round-half-even and constant groups', async () => {
    const rand = mulberry32(3);
    const rows = 9, cols = 128;
    const w = Float32Array.from({ length: rows * cols }, () => (rand() - 0.5) * 4);
    w.fill(0.3, 2 * cols, 2 * cols + 64); // a constant group
    w.fill(0, 4 * cols, 5 * cols); // a zero row
    w[7 * cols + 3] = 50; // an outlier
    for (const bits of [3, 4, 8]) {
      const got = await pseudoQuantize(w, rows, cols, { wBit: bits, groupSize: 64, zeroPoint: true });
      const ref = refPseudoQuant(w, rows, cols, bits, 64);
      let mismatches = 0;
      for (let i = 0; i < w.length; i++) if (Math.abs(got[i] - ref[i]) > 1e-6 * Math.abs(ref[i]) + 1e-12) mismatches++;
      expect(mismatches).toBeLessThanOrEqual(1); // a float division exactly at a tie may differ
    }
    // ties: group [0, 3.75] at 4 bits has s = 0.25; 0.125, 0.375, 0.625 -> 0, 0.5, 0.5
    const t = new Float32Array(16).fill(1);
    t.set([0, 3.75, 0.125, 0.375, 0.625]);
    const tq = await pseudoQuantize(t, 1, 16, { wBit: 4, groupSize: -1, zeroPoint: true });
    expect(Array.from(tq.subarray(2, 5))).toEqual([0, 0.5, 0.5]);
  });

  it('validates arguments and rejects NaN with a NonFiniteError', async () => {
    const w = new Float32Array(96);
    await expect(pseudoQuantize(w, 1, 96, { wBit: 4, groupSize: 64, zeroPoint: true })).rejects.toThrow(/not divisible/);
    await expect(pseudoQuantize(w, 1, 96, { wBit: 9, groupSize: 32, zeroPoint: true })).rejects.toThrow(InvalidArgumentError);
    await expect(pseudoQuantize(w, 2, 96, { wBit: 4, groupSize: 32, zeroPoint: true })).rejects.toThrow(/192 elements/);
    w[5] = Number.NaN;
    await expect(pseudoQuantize(w, 1, 96, { wBit: 4, groupSize: 32, zeroPoint: true })).rejects.toBeInstanceOf(NonFiniteError);
  });
});

describe('decoderLayerForward / lmHeadNll', () => {
  it('names non-finite tensors and validates shapes', async () => {
    const { arch, weights } = randomLayer(1);
    const x = new Float32Array(2 * 8 * 64).fill(0.5);
    await expect(decoderLayerForward(arch, weights, x, 7)).rejects.toThrow(InvalidArgumentError);
    await expect(decoderLayerForward(arch, { ...weights, q: new Float32Array(5) }, x, 8)).rejects.toThrow(/weights\.q: expected 4096 elements/);
    const bad = weights.down.slice();
    bad[70] = Number.POSITIVE_INFINITY;
    const err = await decoderLayerForward(arch, { ...weights, down: bad }, x, 8).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toContain('down_proj.weight');
    const h = await decoderLayerForward(arch, weights, x, 8);
    expect(h.length).toBe(x.length);
    const ids = Int32Array.from({ length: 16 }, (_, i) => i % 10);
    const r = await lmHeadNll(h, 8, weights.inputNorm, 1e-5, new Float32Array(10 * 64).fill(0.01), 10, ids);
    expect(r.count).toBe(14);
    expect(r.nllSum / r.count).toBeCloseTo(Math.log(10), 4); // constant logits: uniform
    await expect(lmHeadNll(h, 8, weights.inputNorm, 1e-5, new Float32Array(10 * 64), 10, ids.map(() => 12))).rejects.toThrow(/outside the vocabulary/);
  });

  it('lmHeadNll on an fp16 / bf16 lm_head as stored gives bitwise the result on its widening; NaN / Inf in it are named', async () => {
    const { arch, weights } = randomLayer(3);
    const h = await decoderLayerForward(arch, weights, new Float32Array(2 * 8 * 64).map((_, i) => Math.sin(i)), 8);
    const vocab = 37;
    const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 7) % vocab);
    const rand = mulberry32(4);
    for (const dtype of ['fp16', 'bf16'] as const) {
      // finite values of about +-0.03..0.5 in the format: a sign, a small exponent range, any mantissa
      const data = Uint16Array.from({ length: vocab * 64 }, () => {
        const bits = Math.floor(rand() * 0x10000);
        return dtype === 'fp16' ? (bits & 0x87ff) | 0x2800 : (bits & 0x80ff) | 0x3d00;
      });
      const half = { data, dtype };
      const got = await lmHeadNll(h, 8, weights.inputNorm, 1e-5, half, vocab, ids);
      const want = await lmHeadNll(h, 8, weights.inputNorm, 1e-5, toFloat32(half), vocab, ids);
      expect(got).toEqual(want);
      expect(Number.isFinite(got.nllSum) && got.count === 14).toBe(true);
      const bad = data.slice();
      bad[64 * 5 + 3] = dtype === 'fp16' ? 0x7e00 : 0xff80; // NaN (fp16), -Inf (bf16)
      await expect(lmHeadNll(h, 8, weights.inputNorm, 1e-5, { data: bad, dtype }, vocab, ids)).rejects.toThrow(
        new RegExp(`lm_head\\.weight: value at row 5, column 3 is ${dtype === 'fp16' ? 'NaN' : 'Inf'}`),
      );
    }
    await expect(lmHeadNll(h, 8, weights.inputNorm, 1e-5, { data: new Uint16Array(vocab * 64 - 1), dtype: 'fp16' }, vocab, ids)).rejects.toThrow(/lmHead: expected 2368 elements, got 2367/);
    await expect(lmHeadNll(h, 8, weights.inputNorm, 1e-5, { data: new Uint16Array(vocab * 64), dtype: 'e5m2' as 'fp16' }, vocab, ids)).rejects.toThrow(/lmHead\.dtype: expected 'fp16'/);
  });

  it('honours an AbortSignal', async () => {
    const { arch, weights } = randomLayer(2);
    const ac = new AbortController();
    ac.abort();
    await expect(decoderLayerForward(arch, weights, new Float32Array(8 * 64), 8, { signal: ac.signal })).rejects.toBeInstanceOf(AbortedError);
  });
});

describe('quantizeDecoderLayer', () => {
  it('quantizes a random layer: shapes, phases, report, full-precision output', async () => {
    const { arch, weights } = randomLayer(4);
    const rand = mulberry32(9);
    const x = Float32Array.from({ length: 3 * 32 * 64 }, () => (rand() - 0.5) * 4);
    const phases: string[] = [];
    const r = await quantizeDecoderLayer(arch, weights, x, 32, AWQ, { onPhase: (p) => phases.push(p) });
    expect(phases).toEqual(['forward', 'scale-search', 'clip-search', 'quantize']);
    expect(r.output).toEqual(await decoderLayerForward(arch, weights, x, 32));
    const o = r.linears.o_proj;
    expect([o.out, o.in, o.groupSize, o.q.length, o.zeros.length, o.scales.length]).toEqual([64, 64, 32, 4096, 128, 128]);
    // the quantizer's linears go to the int4 layer and the AWQ packer as they are (outFeatures / inFeatures)
    const down = r.linears.down_proj;
    expect([down.outFeatures, down.inFeatures]).toEqual([down.out, down.in]);
    const w = await (await Int4Linear.fromQuantized(down)).dequantize();
    expect(Array.from(w.slice(0, 3))).toEqual([0, 1, 2].map((i) => Math.fround((down.q[i] - down.zeros[0]) * down.scales[0])));
    expect(await dequantizeAwq({ ...down, ...(await packAwq(down)) })).toEqual(w);
    expect(r.linears.k_proj.q.length).toBe(32 * 64);
    expect(Math.max(...r.linears.down_proj.q)).toBeLessThanOrEqual(15);
    for (const s of r.linears.gate_proj.scales) expect(fp16Round(s)).toBe(s);
    expect(r.report.groups.map((g) => g.group)).toEqual(['qkv', 'o', 'gate_up', 'down']);
    expect(r.report.groups[1].skipped).toBe('grouped-query attention');
    // Without grouped-query attention but with heads x head_dim (128) != hidden (64), v_proj [128, 64]
    // and o_proj [64, 128] differ in shape: AutoAWQ skips the o group there too (it was searched).
    const wide = randomLayer(5, 64, 128, 4, 4, 32);
    const rw = await quantizeDecoderLayer(wide.arch, wide.weights, x, 32, AWQ);
    expect(rw.report.groups[1].skipped).toBe('v_proj and o_proj differ in shape (heads x head_dim != hidden)');
    const square = randomLayer(5, 64, 128, 4, 4, 16);
    expect((await quantizeDecoderLayer(square.arch, square.weights, x, 32, AWQ)).report.groups[1].skipped).toBeUndefined();
    // 96 tokens, down_proj 128 -> 64: 20 direct products (31 MFLOP) are cheaper than the Gram route (45 MFLOP)
    expect(r.report.groups.map((g) => g.lossMethod)).toEqual(['direct', undefined, 'direct', 'direct']);
    const qkv = r.report.groups[0];
    expect(qkv.losses.length).toBe(20);
    expect(qkv.lossAtBest).toBe(Math.min(...qkv.losses));
    expect(qkv.lossAtZero).toBe(qkv.losses[0]);
    expect(qkv.salientChannels.length).toBe(8);
    expect(r.report.clip.map((c) => c.linear)).toEqual(['v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    expect(r.report.clip[0].shrinkHistogram.reduce((a, b) => a + b, 0)).toBe(32 * 2);
    expect(r.report.gflop).toBeGreaterThan(0);
  });

  it('rtn quantizes the original weights exactly as pseudoQuantize does', async () => {
    const { arch, weights } = randomLayer(5);
    const x = new Float32Array(2 * 16 * 64).map((_, i) => Math.sin(i));
    const r = await quantizeDecoderLayer(arch, weights, x, 16, { ...AWQ, method: 'rtn', groupSize: -1 });
    const up = r.linears.up_proj;
    expect(up.groupSize).toBe(64);
    const ref = await pseudoQuantize(weights.up, 128, 64, { wBit: 4, groupSize: -1, zeroPoint: true });
    for (let i = 0; i < ref.length; i++) {
      const g = Math.floor(i / 64);
      expect((up.q[i] - up.zeros[g]) * up.scales[g]).toBe(ref[i]);
    }
    expect(r.inputNorm).toEqual(weights.inputNorm);
    expect(r.report.groups).toEqual([]);
    // without hidden states no forward runs, and the quantization is the same
    const phases: string[] = [];
    const n = await quantizeDecoderLayer(arch, weights, null, 16, { ...AWQ, method: 'rtn', groupSize: -1 }, { onPhase: (p) => phases.push(p) });
    expect(phases).toEqual(['quantize']);
    expect(n.output.length).toBe(0);
    expect(n.report.gflop).toBe(0);
    for (const name of ['q_proj', 'o_proj', 'up_proj', 'down_proj'] as const) {
      expect([n.linears[name].q, n.linears[name].zeros, n.linears[name].scales]).toEqual([r.linears[name].q, r.linears[name].zeros, r.linears[name].scales]);
    }
    await expect(quantizeDecoderLayer(arch, weights, null, 16, AWQ)).rejects.toThrow(InvalidArgumentError);
    await expect(quantizeDecoderLayer(arch, weights, null, 16, AWQ)).rejects.toThrow(/null is accepted only with method 'rtn'/);
  });

  it('validates options and aborts', async () => {
    const { arch, weights } = randomLayer(6);
    const x = new Float32Array(16 * 64).fill(0.1);
    await expect(quantizeDecoderLayer(arch, weights, x, 16, { ...AWQ, groupSize: 128 })).rejects.toThrow(/not divisible by the group size 128/);
    await expect(quantizeDecoderLayer(arch, weights, x, 16, { ...AWQ, wBit: 1 })).rejects.toThrow(/wBit/);
    await expect(quantizeDecoderLayer(arch, weights, x, 16, { ...AWQ, method: 'gptq' as 'awq' })).rejects.toThrow(/method/);
    const ac = new AbortController();
    const p = quantizeDecoderLayer(arch, weights, new Float32Array(64 * 16 * 64).fill(0.1), 16, AWQ, {
      signal: ac.signal,
      onPhase: (ph) => { if (ph === 'scale-search') ac.abort(); },
    });
    await expect(p).rejects.toBeInstanceOf(AbortedError);
  });

  it('precision bf16 on the CPU: bf16-rounded products, losses within the rounding of fp32', async () => {
    const { arch, weights } = randomLayer(4);
    const rand = mulberry32(19);
    const x = Float32Array.from({ length: 3 * 32 * 64 }, () => (rand() - 0.5) * 4);
    const f = await quantizeDecoderLayer(arch, weights, x, 32, AWQ);
    const b = await quantizeDecoderLayer(arch, weights, x, 32, { ...AWQ, precision: 'bf16' });
    // the recorded forward ran in bf16 too: its output moved, by about bf16's step
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < f.output.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(b.output[i] - f.output[i]));
      maxAbs = Math.max(maxAbs, Math.abs(f.output[i]));
    }
    expect(maxDiff).toBeGreaterThan(0);
    expect(maxDiff / maxAbs).toBeLessThan(1e-2);
    for (const g of [0, 2, 3]) {
      const lb = b.report.groups[g].losses;
      const lf = f.report.groups[g].losses;
      lf.forEach((l, i) => expect(Math.abs(lb[i] / l - 1)).toBeLessThan(0.05));
    }
  });

  it('backend cuda: a typed CUDA error without a usable device; fp16 needs CUDA', async () => {
    const { arch, weights } = randomLayer(4);
    const x = new Float32Array(32 * 64).fill(0.5);
    await expect(quantizeDecoderLayer(arch, weights, x, 32, { ...AWQ, precision: 'fp16' })).rejects.toThrow(InvalidArgumentError);
    await expect(quantizeDecoderLayer(arch, weights, x, 32, { ...AWQ, precision: 'fp16' })).rejects.toThrow(/'fp16' needs backend 'cuda'/);
    await expect(quantizeDecoderLayer(arch, weights, x, 32, { ...AWQ, backend: 'gpu' as 'cuda' })).rejects.toThrow(/options.backend/);
    if (backends().cuda !== null) return; // a device answers: the CUDA path is checked by the C++ tests there
    const err = await quantizeDecoderLayer(arch, weights, x, 32, { ...AWQ, backend: 'cuda' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CudaError);
    expect((err as CudaError).code).toBe('ERR_AWQ_CUDA');
  });
});
