import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import {
  AwqCheckpointWriter,
  BadCheckpointError,
  BadConfigError,
  InvalidArgumentError,
  ModelFolder,
  NonFiniteError,
  dequantizeAwq,
  loadAwq,
  openAwqCheckpoint,
  packAwq,
  readRawConfig,
  unpackAwq,
  type AwqLinearTensors,
} from '../dist/index.js';
import { exactHalfBits, HAVE_MODELS, LLAMA, LLAMA_AWQ, llamaConfig, safetensorsBytes, tmpDir, writeJson } from './helpers/fixtures.js';
import { mulberry32 } from './helpers/random.js';

const tmp = tmpDir('awq-fmt-');
afterAll(() => tmp.cleanup());

function f16(x: number): number {
  // fp16 bits -> value, for the reference
  const e = (x >> 10) & 31, m = x & 1023, s = x >> 15 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : s * (1024 + m) * 2 ** (e - 25);
}

describe('packAwq: bit-exact with REFERENCE.md section 6 (words written by hand)', () => {
  it('8 columns 1..8 give 0x86427531 (nibble i holds column [0,2,4,6,1,3,5,7][i])', async () => {
    const p = await packAwq({
      q: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), zeros: new Uint8Array([9, 0, 0, 0, 0, 0, 0, 15]),
      scales: new Float32Array([1, 2, 0.5, -1, 65504, 2 ** -24, 0, 3]), outFeatures: 8, inFeatures: 1, groupSize: 1,
    });
    expect(p.qweight[0] >>> 0).toBe(0x86427531);
    expect(p.qzeros[0] >>> 0).toBe(0xf0000009);
    expect(Array.from(p.scales)).toEqual([0x3c00, 0x4000, 0x3800, 0xbc00, 0x7bff, 0x0001, 0x0000, 0x4200]);
  });

  it('a single 15 at output row r lands in nibble [0,4,1,5,2,6,3,7][r % 8] of word r/8, row i', async () => {
    const expected = [0x0000000f, 0x000f0000, 0x000000f0, 0x00f00000, 0x00000f00, 0x0f000000, 0x0000f000, 0xf0000000];
    const [out, inF, g] = [24, 6, 3];
    for (let r = 0; r < out; r++) {
      for (let i = 0; i < inF; i++) {
        const q = new Uint8Array(out * inF);
        q[r * inF + i] = 15;
        const zeros = new Uint8Array(out * 2);
        zeros[r * 2 + 1] = 15;
        const p = await packAwq({ q, zeros, scales: new Float32Array(out * 2).fill(1), outFeatures: out, inFeatures: inF, groupSize: g });
        for (let k = 0; k < inF * 3; k++) {
          const want = k === i * 3 + Math.floor(r / 8) ? expected[r % 8] : 0;
          expect(p.qweight[k] >>> 0).toBe(want);
        }
        for (let k = 0; k < 2 * 3; k++) expect(p.qzeros[k] >>> 0).toBe(k === 3 + Math.floor(r / 8) ? expected[r % 8] : 0);
      }
    }
  });

  it('scales are transposed to [in/g, out]', async () => {
    const scales = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]); // [8, 2]
    const p = await packAwq({ q: new Uint8Array(8 * 4), zeros: new Uint8Array(16), scales, outFeatures: 8, inFeatures: 4, groupSize: 2 });
    expect(Array.from(p.scales).map(f16)).toEqual([1, 3, 5, 7, 9, 11, 13, 15, 2, 4, 6, 8, 10, 12, 14, 16]);
  });

  it('rejects values outside 0..15, bad shapes and fp16-overflowing scales', async () => {
    const base = { q: new Uint8Array(16 * 4), zeros: new Uint8Array(16 * 2), scales: new Float32Array(32).fill(1), outFeatures: 16, inFeatures: 4, groupSize: 2 };
    const q = base.q.slice();
    q[4 * 9 + 2] = 16;
    await expect(packAwq({ ...base, q })).rejects.toThrow(/q\[9, 2\] = 16/);
    const zeros = base.zeros.slice();
    zeros[5] = 99;
    await expect(packAwq({ ...base, zeros })).rejects.toThrow(InvalidArgumentError);
    const scales = base.scales.slice();
    scales[3] = 1e5;
    await expect(packAwq({ ...base, scales })).rejects.toThrow(/scales\[1, 1\]/);
    // the code Int4Linear.fromQuantized gives for the same scales
    await expect(packAwq({ ...base, scales })).rejects.toThrow(NonFiniteError);
    await expect(packAwq(null as unknown as typeof base)).rejects.toThrow(/tensors: expected an object, got null/);
    await expect(packAwq({ ...base, outFeatures: 12 })).rejects.toThrow(/outFeatures/);
    await expect(packAwq({ ...base, groupSize: 3 })).rejects.toThrow(/inFeatures/);
    await expect(packAwq({ ...base, q: new Uint8Array(3) })).rejects.toThrow(/q \[16, 4\]: expected 64 elements, got 3/);
    await expect(packAwq({ ...base, scales: new Float64Array(32) as unknown as Float32Array })).rejects.toThrow(/Float32Array/);
  });
});

describe('pack / unpack / dequantize round trip', () => {
  it('is exact on random and adversarial data', async () => {
    const rand = mulberry32(11);
    for (const [out, inF, g] of [[8, 1, 1], [16, 256, 128], [136, 384, 128], [264, 300, 300], [40, 64, 32]]) {
      const groups = inF / g;
      const q = new Uint8Array(out * inF).map(() => Math.floor(rand() * 16));
      const zeros = new Uint8Array(out * groups).map(() => Math.floor(rand() * 16));
      const scales = new Float32Array(out * groups).map(() => (rand() - 0.5) * 2 ** Math.floor(rand() * 30 - 20));
      // adversarial: constant rows (all 15 / all 0), zero scale, smallest subnormal, largest fp16
      q.fill(15, 0, inF);
      if (out > 8) q.fill(0, inF, 2 * inF);
      zeros[0] = 15;
      scales[0] = 0;
      scales[scales.length - 1] = 65504;
      if (scales.length > 2) scales[1] = 2 ** -24;
      const dims = { outFeatures: out, inFeatures: inF, groupSize: g };
      const packed = await packAwq({ q, zeros, scales, ...dims });
      const u = await unpackAwq({ ...packed, ...dims });
      expect(Buffer.compare(Buffer.from(u.q), Buffer.from(q))).toBe(0);
      expect(Buffer.compare(Buffer.from(u.zeros), Buffer.from(zeros))).toBe(0);
      const s16 = Array.from(packed.scales);
      let bad = 0;
      for (let r = 0; r < out; r++) {
        for (let j = 0; j < groups; j++) {
          // scale = fp16 rounding of the input (within half an fp16 ulp) and read back exactly
          const s = f16(s16[j * out + r]);
          if (u.scales[r * groups + j] !== s) bad++;
          if (Math.abs(s - scales[r * groups + j]) > Math.abs(scales[r * groups + j]) * 2 ** -11 + 2 ** -25) bad++;
        }
      }
      expect(bad).toBe(0);
      const w = await dequantizeAwq({ ...packed, ...dims });
      for (let r = 0; r < out; r++) {
        for (let i = 0; i < inF; i++) {
          const ref = Math.fround((q[r * inF + i] - zeros[r * groups + Math.floor(i / g)]) * u.scales[r * groups + Math.floor(i / g)]);
          if (w[r * inF + i] !== ref) bad++;
        }
      }
      expect(bad).toBe(0);
      // repacking the unpacked values gives the same bytes
      const again = await packAwq({ ...u, ...dims });
      expect(Buffer.compare(Buffer.from(again.qweight.buffer), Buffer.from(packed.qweight.buffer))).toBe(0);
      expect(Buffer.compare(Buffer.from(again.qzeros.buffer), Buffer.from(packed.qzeros.buffer))).toBe(0);
      expect(Buffer.compare(Buffer.from(again.scales.buffer), Buffer.from(packed.scales.buffer))).toBe(0);
    }
  });
});

/**
 * A tiny AWQ folder written by hand; `legacy` puts the settings in quant_config.json (as older
 * AutoAWQ versions did; raw text when a string) instead of config.json. q_proj-like linear 'p': in
 * 64, out 16, `groups` groups (2: group size 32) -> qweight [64, 2], qzeros [groups, 2], scales
 * [groups, 16] (zeros unless `scales` gives their dtype and data).
 */
function handAwq(
  name: string,
  quant: Record<string, unknown>,
  opts: { qzerosShape?: number[]; legacy?: unknown; f32Bias?: number; groups?: number; scales?: { dtype: string; data: ArrayBufferView } } = {},
): string {
  const dir = join(tmp.dir, name);
  mkdirSync(dir);
  writeJson(join(dir, 'config.json'), llamaConfig(opts.legacy === undefined ? { quantization_config: quant } : {}));
  if (typeof opts.legacy === 'string') writeFileSync(join(dir, 'quant_config.json'), opts.legacy);
  else if (opts.legacy !== undefined) writeJson(join(dir, 'quant_config.json'), opts.legacy);
  const groups = opts.groups ?? 2;
  const qz = opts.qzerosShape ?? [groups, 2];
  const tensors: [string, string, number[], Uint8Array][] = [
    ['p.qweight', 'I32', [64, 2], new Uint8Array(512)],
    ['p.qzeros', 'I32', qz, new Uint8Array(qz[0] * qz[1] * 4)],
    ['p.scales', opts.scales?.dtype ?? 'F16', [groups, 16], opts.scales ? bytesOf(opts.scales.data) : new Uint8Array(groups * 32)],
  ];
  // an F32 bias [16], every element the given value
  if (opts.f32Bias !== undefined) tensors.push(['p.bias', 'F32', [16], bytesOf(new Float32Array(16).fill(opts.f32Bias))]);
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [tensor, dtype, shape, bytes] of tensors) {
    header[tensor] = { dtype, shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
  }
  writeFileSync(join(dir, 'model.safetensors'), safetensorsBytes(header, Buffer.concat(tensors.map((t) => t[3]))));
  return dir;
}

const bytesOf = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

const goodQuant = { quant_method: 'awq', bits: 4, group_size: 32, zero_point: true, version: 'gemm', modules_to_not_convert: null };

describe('openAwqCheckpoint: checks', () => {
  it('reads a hand-built checkpoint', async () => {
    const ck = await openAwqCheckpoint(handAwq('ok', goodQuant));
    expect(ck.linearNames()).toEqual(['p']);
    const l = await ck.readLinear('p');
    expect([l.inFeatures, l.outFeatures, l.groupSize, l.qweight.length, l.qzeros.length, l.scales.length]).toEqual([64, 16, 32, 128, 4, 32]);
    expect(ck.quantization).toEqual({ bits: 4, groupSize: 32, zeroPoint: true, version: 'gemm', modulesToNotConvert: null });
    await ck.close();
  });

  it('group_size -1 is one group per input row: each linear gets its in_features as its group size', async () => {
    const perRow = { ...goodQuant, group_size: -1 };
    const ck = await openAwqCheckpoint(handAwq('per-row', perRow, { groups: 1 }));
    expect(ck.quantization.groupSize).toBe(-1); // as config.json says
    expect(ck.linearDims('p')).toEqual({ inFeatures: 64, outFeatures: 16, groupSize: 64 });
    const l = await ck.readLinear('p');
    expect([l.groupSize, l.qzeros.length, l.scales.length]).toEqual([64, 2, 16]);
    expect((await dequantizeAwq(l)).length).toBe(64 * 16);
    await ck.close();
    const legacy = await openAwqCheckpoint(handAwq('per-row-legacy', {}, { groups: 1, legacy: { zero_point: true, q_group_size: -1, w_bit: 4, version: 'gemm' } }));
    expect([legacy.quantization.groupSize, legacy.linearDims('p').groupSize]).toEqual([-1, 64]);
    await legacy.close();
    // scales of two groups where -1 means one
    await expect(openAwqCheckpoint(handAwq('per-row-two', perRow))).rejects.toThrow(
      /'p.qzeros': expected shape \[1,2\] \(in=64, out=16 from 'p.qweight' \[64,2\], group_size=-1\), got \[2,2\]/,
    );
    for (const [i, g] of [0, -2, 1.5].entries()) {
      const err = await openAwqCheckpoint(handAwq(`per-row-bad-${i}`, { ...goodQuant, group_size: g }, { groups: 1 })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BadConfigError);
      expect((err as Error).message).toMatch(new RegExp(`group_size: expected a positive integer or -1 \\(one group per row\\), got ${g}$`));
    }
  });

  it('other bit widths, versions and methods are BadConfigErrors naming them', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...goodQuant, bits: 3 }, /bits: expected 4.*got 3/],
      [{ ...goodQuant, version: 'gemv' }, /version: expected 'gemm'.*got "gemv"/],
      [{ ...goodQuant, version: 'exllama' }, /"exllama"/],
      [{ ...goodQuant, quant_method: 'gptq' }, /quant_method: expected 'awq', got "gptq"/],
      [{ ...goodQuant, group_size: '32' }, /group_size/],
      // GPTQModel's names for the layout, read when there is no version; the message names the key read
      [{ ...goodQuant, version: undefined, format: 'gemv' }, /quantization_config\.format: expected 'gemm'.*got "gemv"$/],
      [{ ...goodQuant, version: null, format: 'llm-awq' }, /quantization_config\.format: expected 'gemm'.*got "llm-awq"$/],
      [{ ...goodQuant, version: undefined, checkpoint_format: 'gemv_fast' }, /quantization_config\.checkpoint_format: expected 'gemm'.*got "gemv_fast"$/],
      [{ ...goodQuant, version: undefined, format: null, checkpoint_format: 'GEMV' }, /quantization_config\.checkpoint_format: .*got "GEMV"$/],
      [{ ...goodQuant, version: 'gemv', format: 'gemm' }, /quantization_config\.version: .*got "gemv"$/],
    ];
    for (const [i, [q, re]] of cases.entries()) {
      const err = await openAwqCheckpoint(handAwq(`bad-${i}`, q)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BadConfigError);
      expect((err as Error).message).toMatch(re);
    }
    for (const [i, layout] of [{ format: 'GEMM' }, { checkpoint_format: 'gemm' }, { format: null, checkpoint_format: 'Gemm' }].entries()) {
      const ck = await openAwqCheckpoint(handAwq(`layout-${i}`, { ...goodQuant, version: undefined, ...layout }));
      expect(ck.quantization.version).toBe('gemm');
      await ck.close();
    }
  });

  it("reads AutoAWQ's older quant_config.json when config.json has no quantization_config", async () => {
    const legacy = { zero_point: true, q_group_size: 32, w_bit: 4, version: 'GEMM' };
    const ck = await openAwqCheckpoint(handAwq('legacy', {}, { legacy }));
    expect(ck.quantization).toEqual({ bits: 4, groupSize: 32, zeroPoint: true, version: 'gemm', modulesToNotConvert: null });
    await ck.close();
    // config.json's quantization_config wins where both exist (as in Transformers)
    const both = handAwq('both', goodQuant);
    writeJson(join(both, 'quant_config.json'), { ...legacy, q_group_size: 64 });
    const ck2 = await openAwqCheckpoint(both);
    expect(ck2.quantization.groupSize).toBe(32);
    await ck2.close();
    const cases: [unknown, RegExp][] = [
      [{ ...legacy, w_bit: 3 }, /quant_config\.json: w_bit: expected 4.*got 3/],
      [{ ...legacy, version: 'GEMV' }, /quant_config\.json: version: expected 'gemm'.*got "GEMV"/],
      ['{"w_bit": 4,', /quant_config\.json: not valid JSON/],
      [[4], /quant_config\.json: the settings is not an object/],
    ];
    for (const [i, [bad, re]] of cases.entries()) {
      const err = await openAwqCheckpoint(handAwq(`legacy-bad-${i}`, {}, { legacy: bad })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BadConfigError);
      expect((err as Error).message).toMatch(re);
    }
    // neither file: not an AWQ checkpoint, and the message names both places it looked
    const none = handAwq('neither', {}, { legacy: {} });
    rmSync(join(none, 'quant_config.json'));
    await expect(openAwqCheckpoint(none)).rejects.toThrow(/no 'quantization_config' \(and no quant_config\.json\): not an AWQ checkpoint/);
  });

  it('an F32 bias is read as the fp16 the kernels take; one beyond fp16 is a BadCheckpointError naming the file', async () => {
    const ok = await openAwqCheckpoint(handAwq('f32-bias', goodQuant, { f32Bias: 1.5 }));
    expect(Array.from((await ok.readLinear('p')).bias!)).toEqual(new Array(16).fill(0x3e00));
    await ok.close();
    const big = await openAwqCheckpoint(handAwq('f32-bias-big', goodQuant, { f32Bias: 1e6 }));
    const err = await big.readLinear('p').catch((e: unknown) => e);
    await big.close();
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect((err as Error).message).toMatch(/f32-bias-big\/model\.safetensors: tensor 'p\.bias': element 0 = 1000000 overflows fp16 \(max 65504\): the AWQ kernels take fp16 biases$/);
  });

  it('BF16 and F32 scales are read as the fp16 of the same values; beyond fp16 a BadCheckpointError, an integer dtype refused', async () => {
    // 32 values that bf16 and fp16 both hold exactly (8 significant bits, 2^-13 .. 240) and a zero
    const values = new Float32Array(32).map((_, i) => (i === 5 ? 0 : (i % 2 ? -1 : 1) * (1 + (i % 8) / 8) * 2 ** (7 - (i % 21))));
    let folders = 0;
    const read = async (dtype: string, data: ArrayBufferView) => {
      const ck = await openAwqCheckpoint(handAwq(`scales-${dtype}-${folders++}`, goodQuant, { scales: { dtype, data } }));
      try {
        return await ck.readLinear('p');
      } finally {
        await ck.close();
      }
    };
    const ref = await read('F16', exactHalfBits(values, 'F16'));
    expect(Array.from(ref.scales, f16)).toEqual(Array.from(values));
    expect(await read('BF16', exactHalfBits(values, 'BF16'))).toEqual(ref);
    expect(await read('F32', values)).toEqual(ref);
    // rounded to the nearest fp16, ties to even (fp16's step at 1 is 2^-10)
    const between = new Float32Array(32).fill(1);
    between.set([1 + 2 ** -10 + 2 ** -12, 1 + 2 ** -11, 1 + 3 * 2 ** -11]);
    expect(Array.from((await read('F32', between)).scales.slice(0, 3))).toEqual([0x3c01, 0x3c00, 0x3c02]);

    const big = values.slice();
    big[3] = 1e6;
    const err = await read('F32', big).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect((err as Error).message).toMatch(/\/model\.safetensors: tensor 'p\.scales': element 3 = 1000000 overflows fp16 \(max 65504\): the AWQ kernels take fp16 scales$/);
    big[3] = Number.NaN;
    await expect(read('F32', big)).rejects.toThrow(NonFiniteError);
    await expect(read('F32', big)).rejects.toThrow(/\/model\.safetensors: tensor 'p\.scales': element 3 is NaN$/);

    const int = await openAwqCheckpoint(handAwq('scales-i32', goodQuant, { scales: { dtype: 'I32', data: new Int32Array(32) } })).catch((e: unknown) => e);
    expect(int).toBeInstanceOf(BadCheckpointError);
    expect((int as Error).message).toMatch(/scales-i32\/model\.safetensors: tensor 'p\.scales': expected dtype F16, BF16 or F32, got I32$/);
  });

  it('inconsistent shapes are BadCheckpointErrors naming the tensor', async () => {
    await expect(openAwqCheckpoint(handAwq('shape', goodQuant, { qzerosShape: [3, 2] }))).rejects.toThrow(
      /'p.qzeros': expected shape \[2,2\] \(in=64, out=16 from 'p.qweight' \[64,2\], group_size=32\), got \[3,2\]/,
    );
    await expect(openAwqCheckpoint(handAwq('gsize', { ...goodQuant, group_size: 128 }))).rejects.toThrow(
      /'p.qweight': in_features 64 \(its rows\) is not a multiple of the quantization's group_size 128/,
    );
  });
});

function randomLinear(name: string, out: number, inF: number, g: number, seed: number, bias = false) {
  const rand = mulberry32(seed);
  return {
    name, outFeatures: out, inFeatures: inF, groupSize: g,
    q: new Uint8Array(out * inF).map(() => Math.floor(rand() * 16)),
    zeros: new Uint8Array((out * inF) / g).map(() => Math.floor(rand() * 16)),
    scales: new Float32Array((out * inF) / g).map(() => rand() * 0.01 + 1e-4),
    bias: bias ? new Uint16Array(out).map(() => 0x3c00 + Math.floor(rand() * 100)) : undefined,
  };
}

describe('AwqCheckpointWriter', () => {
  const src = join(tmp.dir, 'src-model');
  mkdirSync(src, { recursive: true });
  writeJson(join(src, 'config.json'), llamaConfig({ model_type: 'qwen2' }));
  writeFileSync(join(src, 'tokenizer.json'), '{}');
  writeFileSync(join(src, 'tokenizer_config.json'), '{}');
  writeFileSync(join(src, 'model.safetensors'), '');

  it('writes linears and fp16 tensors, config with quantization_config, and reads them back', async () => {
    const out = join(tmp.dir, 'awq-out');
    const w = await AwqCheckpointWriter.create(out, { sourceDir: src, maxShardBytes: 8_000 });
    const lins: AwqLinearTensors[] = [];
    for (const [i, [o, inF]] of [[64, 128], [16, 128], [128, 64]].entries()) {
      const r = randomLinear(`model.layers.0.l${i}`, o, inF, 32, i, i === 1);
      const packed = await packAwq(r);
      const t: AwqLinearTensors = { name: r.name, outFeatures: o, inFeatures: inF, groupSize: 32, ...packed, ...(r.bias ? { bias: r.bias } : {}) };
      lins.push(t);
      await w.addLinear(t);
    }
    const emb = new Float32Array(32 * 64).map((_, i) => Math.sin(i) * 3);
    await w.addTensor('model.embed_tokens.weight', [32, 64], emb, 'BF16');
    expect(existsSync(out)).toBe(false); // nothing under the final name before finish
    const raw = llamaConfig({ model_type: 'qwen2', torch_dtype: 'bfloat16' });
    await w.finish(raw, { groupSize: 32 });
    const files = readdirSync(out).sort();
    expect(files.filter((f) => !/^model-\d{5}-of-\d{5}\.safetensors$/.test(f))).toEqual(
      ['config.json', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json'],
    );
    expect(files.length).toBeGreaterThan(5);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(cfg.torch_dtype).toBe('float16');
    expect(cfg.quantization_config).toEqual({ quant_method: 'awq', bits: 4, group_size: 32, zero_point: true, version: 'gemm', modules_to_not_convert: null });
    const ck = await openAwqCheckpoint(out);
    expect(ck.linearNames()).toEqual(lins.map((l) => l.name));
    for (const l of lins) {
      const back = await ck.readLinear(l.name);
      expect(back).toEqual(l);
    }
    const e = await ck.readF32('model.embed_tokens.weight');
    expect(ck.folder.info('model.embed_tokens.weight').dtype).toBe('F16');
    let maxErr = 0;
    for (let i = 0; i < e.length; i++) maxErr = Math.max(maxErr, Math.abs(e[i] - emb[i]) / Math.max(Math.abs(emb[i]), 2 ** -14));
    expect(maxErr).toBeLessThanOrEqual(2 ** -11);
    await ck.close();
  });

  it('keepSourceDtype keeps bf16 / f32', async () => {
    const out = join(tmp.dir, 'awq-keep');
    const w = await AwqCheckpointWriter.create(out, { sourceDir: src, keepSourceDtype: true });
    await w.addLinear({ name: 'x', ...(await packAwq(randomLinear('x', 8, 32, 32, 1))), outFeatures: 8, inFeatures: 32, groupSize: 32 });
    await w.addTensor('b', [2], new Float32Array([1e10, -3]), 'BF16');
    await w.addTensor('f', [2], new Float32Array([1e10, 0.1]), 'F32');
    await w.finish(llamaConfig(), { groupSize: 32 });
    const m = await ModelFolder.open(out);
    expect([m.info('b').dtype, m.info('f').dtype]).toEqual(['BF16', 'F32']);
    expect(Array.from(await m.readF32('f'))).toEqual([Math.fround(1e10), Math.fround(0.1)]);
    await m.close();
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
  });

  it('config.json: the source text edited in place, dtype set with torch_dtype, zero_point always true', async () => {
    const src2 = join(tmp.dir, 'src-text');
    mkdirSync(src2);
    // As Transformers >= 4.56 writes it: "dtype", and floats spelled as floats.
    const text = JSON.stringify(llamaConfig({ dtype: 'bfloat16' }), null, 2)
      .replace('"rope_theta": 10000', '"rope_theta": 10000.0')
      .replace(/"rms_norm_eps": [^,\n]+/, '"rms_norm_eps": 1e-06');
    writeFileSync(join(src2, 'config.json'), text);
    const raw = await readRawConfig(src2);
    expect(raw.rope_theta).toBe(10000);
    const finishWith = async (out: string, rawConfig: Record<string, unknown>) => {
      const w = await AwqCheckpointWriter.create(out, { sourceDir: src2 });
      await w.addLinear({ name: 'x', ...(await packAwq(randomLinear('x', 8, 32, 32, 1))), outFeatures: 8, inFeatures: 32, groupSize: 32 });
      await w.finish(rawConfig, { groupSize: 32 });
      return readFileSync(join(out, 'config.json'), 'utf8');
    };
    const written = await finishWith(join(tmp.dir, 'awq-text'), raw);
    expect(written).toContain('"rope_theta": 10000.0,');
    expect(written).toContain('"rms_norm_eps": 1e-06,');
    const cfg = JSON.parse(written);
    expect(cfg).toEqual({
      ...raw, dtype: 'float16', torch_dtype: 'float16',
      quantization_config: { quant_method: 'awq', bits: 4, group_size: 32, zero_point: true, version: 'gemm', modules_to_not_convert: null },
    });
    // A config the caller changed is written as given (JSON.stringify), with the same keys set.
    const changed = JSON.parse(await finishWith(join(tmp.dir, 'awq-changed'), { ...raw, max_position_embeddings: 4096 }));
    expect(changed.max_position_embeddings).toBe(4096);
    expect([changed.dtype, changed.torch_dtype, changed.quantization_config.zero_point]).toEqual(['float16', 'float16', true]);
  });

  it('refuses fp16 overflow and NaN naming the tensor; the writer stays usable', async () => {
    const out = join(tmp.dir, 'awq-overflow');
    const w = await AwqCheckpointWriter.create(out, { sourceDir: src });
    await expect(w.addTensor('big', [3], new Float32Array([1, 70000, 2]))).rejects.toThrow(/tensor 'big': element 1 = 70000 overflows fp16/);
    await expect(w.addTensor('nan', [2], new Float32Array([NaN, 1]))).rejects.toBeInstanceOf(NonFiniteError);
    await expect(w.addTensor('shape', [3], new Float32Array(2))).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(w.addLinear({ name: 'l', inFeatures: 32, outFeatures: 8, groupSize: 32, qweight: new Int32Array(3), qzeros: new Int32Array(1), scales: new Uint16Array(8) })).rejects.toThrow(/l.qweight \[32, 1\]: expected 32 elements, got 3/);
    await w.addTensor('ok', [1], new Float32Array([65504]));
    await w.abort();
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(tmp.dir).filter((n) => n.startsWith('awq-overflow'))).toEqual([]);
  });

  it('refuses an existing output without overwrite and an output inside the source; nothing written', async () => {
    const out = join(tmp.dir, 'exists');
    mkdirSync(out);
    await expect(AwqCheckpointWriter.create(out, { sourceDir: src })).rejects.toThrow(/already exists/);
    await expect(AwqCheckpointWriter.create(join(src, 'awq'), { sourceDir: src })).rejects.toThrow(/inside the input folder/);
    expect(readdirSync(out)).toEqual([]);
    expect(readdirSync(src).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const w = await AwqCheckpointWriter.create(out, { sourceDir: src, overwrite: true });
    await w.addLinear({ name: 'x', ...(await packAwq(randomLinear('x', 8, 32, 32, 1))), outFeatures: 8, inFeatures: 32, groupSize: 32 });
    await w.finish(llamaConfig(), { groupSize: 32 });
    expect(readdirSync(out)).toContain('model.safetensors');
  });
});

describe.skipIf(!HAVE_MODELS)('llama-22m-awq, written by another implementation (skipped when ../shared is absent)', () => {
  it('refuses linears of other shapes than config.json implies, naming the file and the tensor', async () => {
    // 16 heads of 64 instead of 8: q_proj would be 1024 wide, the file's is 512
    const dir = join(tmp.dir, 'awq-shapes');
    mkdirSync(dir);
    for (const f of readdirSync(LLAMA_AWQ)) if (f !== 'config.json') symlinkSync(join(LLAMA_AWQ, f), join(dir, f));
    const config = JSON.parse(readFileSync(join(LLAMA_AWQ, 'config.json'), 'utf8'));
    writeJson(join(dir, 'config.json'), { ...config, num_attention_heads: 16 });
    const err = await openAwqCheckpoint(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect((err as Error).message).toMatch(/model\.safetensors: 'model\.layers\.0\.self_attn\.q_proj\.qweight' holds a linear of in 512, out 512; config\.json implies in 512, out 1024/);
    await expect(loadAwq(dir)).rejects.toThrow(BadCheckpointError);
  });

  it('has consistent shapes for every decoder linear; unpack then repack gives the same bytes', async () => {
    const ck = await openAwqCheckpoint(LLAMA_AWQ);
    const c = ck.config;
    expect(ck.linearNames().length).toBe(7 * c.numLayers);
    expect(ck.folder.has('lm_head.weight')).toBe(false); // tied, omitted
    const outIn: Record<string, [number, number]> = {
      q_proj: [c.numHeads * c.headDim, c.hiddenSize], k_proj: [c.numKvHeads * c.headDim, c.hiddenSize], v_proj: [c.numKvHeads * c.headDim, c.hiddenSize],
      o_proj: [c.hiddenSize, c.numHeads * c.headDim], gate_proj: [c.intermediateSize, c.hiddenSize], up_proj: [c.intermediateSize, c.hiddenSize],
      down_proj: [c.hiddenSize, c.intermediateSize],
    };
    for (const name of ck.linearNames()) {
      const l = await ck.readLinear(name);
      expect([l.outFeatures, l.inFeatures], name).toEqual(outIn[name.split('.').at(-1)!]);
      expect(l.groupSize).toBe(128);
      const u = await unpackAwq(l);
      const again = await packAwq({ ...u, outFeatures: l.outFeatures, inFeatures: l.inFeatures, groupSize: l.groupSize });
      expect(Buffer.compare(Buffer.from(again.qweight.buffer), Buffer.from(l.qweight.buffer)), name).toBe(0);
      expect(Buffer.compare(Buffer.from(again.qzeros.buffer), Buffer.from(l.qzeros.buffer)), name).toBe(0);
      expect(Buffer.compare(Buffer.from(again.scales.buffer), Buffer.from(l.scales.buffer)), name).toBe(0);
    }
    await ck.close();
  });

  it('dequantizes to the source weights up to the per-input-channel AWQ scaling (nibble order check)', async () => {
    // AWQ multiplies input channel c of a linear by s[c]: dequant(W')[r, c] ~= k_c * W[r, c]. With
    // the right nibble order the per-column fit leaves ~quantization noise; permuting output
    // rows within each 8-column word (a wrong order) leaves almost everything unexplained.
    const ck = await openAwqCheckpoint(LLAMA_AWQ);
    const src = await ModelFolder.open(LLAMA);
    for (const name of ['model.layers.0.self_attn.q_proj', 'model.layers.3.mlp.down_proj']) {
      const l = await ck.readLinear(name);
      const w = await dequantizeAwq(l);
      const o = await src.readF32(`${name}.weight`);
      const fit = (perm: (r: number) => number): number => {
        let res = 0, tot = 0;
        for (let c = 0; c < l.inFeatures; c++) {
          let sxy = 0, sxx = 0;
          for (let r = 0; r < l.outFeatures; r++) {
            const x = o[perm(r) * l.inFeatures + c];
            sxy += x * w[r * l.inFeatures + c];
            sxx += x * x;
          }
          const k = sxy / sxx;
          for (let r = 0; r < l.outFeatures; r++) {
            const y = w[r * l.inFeatures + c];
            res += (y - k * o[perm(r) * l.inFeatures + c]) ** 2;
            tot += y * y;
          }
        }
        return res / tot;
      };
      expect(fit((r) => r), name).toBeLessThan(0.03);
      expect(fit((r) => (r & ~7) | [0, 2, 4, 6, 1, 3, 5, 7][r & 7]), name).toBeGreaterThan(0.5);
    }
    await src.close();
    await ck.close();
  });

  it('writes the checkpoint back out and reads it again losslessly', async () => {
    const ck = await openAwqCheckpoint(LLAMA_AWQ);
    const out = join(tmp.dir, 'llama-22m-awq-copy');
    const w = await AwqCheckpointWriter.create(out, { sourceDir: LLAMA_AWQ, maxShardBytes: 4_000_000 });
    const linears = new Set(ck.linearNames());
    const written = new Set<string>();
    for (const name of ck.folder.tensorNames()) {
      const prefix = name.replace(/\.(qweight|qzeros|scales|bias)$/, '');
      if (linears.has(prefix)) {
        if (!written.has(prefix)) await w.addLinear(await ck.readLinear(prefix));
        written.add(prefix);
      } else {
        const t = ck.folder.info(name);
        await w.addTensor(name, t.shape, await ck.readF32(name), t.dtype);
      }
    }
    await w.finish(ck.folder.rawConfig, ck.quantization);
    const back = await openAwqCheckpoint(out);
    expect(back.folder.shards().length).toBeGreaterThan(1);
    expect(back.folder.tensorNames().sort()).toEqual(ck.folder.tensorNames().sort());
    for (const name of ck.folder.tensorNames()) {
      expect(back.folder.info(name).dtype).toBe(ck.folder.info(name).dtype);
      expect(back.folder.info(name).shape).toEqual(ck.folder.info(name).shape);
      expect(Buffer.compare(Buffer.from(await back.folder.readRaw(name)), Buffer.from(await ck.folder.readRaw(name))), name).toBe(0);
    }
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toEqual(JSON.parse(readFileSync(join(LLAMA_AWQ, 'config.json'), 'utf8')));
    expect(Buffer.compare(readFileSync(join(out, 'tokenizer.json')), readFileSync(join(LLAMA_AWQ, 'tokenizer.json')))).toBe(0);
    await back.close();
    await ck.close();
  });
});
