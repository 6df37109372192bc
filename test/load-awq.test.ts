import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it, vi } from 'vitest';

import {
  AbortedError,
  AwqCheckpointWriter,
  BadCheckpointError,
  denseGemm,
  dequantizeAwq,
  Int4Linear,
  InvalidArgumentError,
  loadAwq,
  NonFiniteError,
  openAwqCheckpoint,
  toFloat32,
  type HalfArray,
  type LoadProgressEvent,
  type ProgressEvent,
  type ProgressListener,
} from '../dist/index.js';
import { exactHalfBits, llamaConfig, retypeTensor } from './helpers/fixtures.js';
import { scratchDir } from './helpers/scratch.js';
import { mulberry32 } from './helpers/random.js';

const dir = '../shared/models/llama-22m-awq';

describe('loadAwq', () => {
  it.skipIf(!existsSync(dir))('loads every linear of llama-22m-awq as an Int4Linear equal to the checkpoint reader\'s dequantization, plus the fp32 tensors', async () => {
    const loaded = await loadAwq(dir);
    const ckpt = await openAwqCheckpoint(dir);
    try {
      expect([...loaded.linears.keys()].sort()).toEqual(ckpt.linearNames().sort());
      expect(loaded.linears.size).toBe(6 * 7);
      expect(loaded.tensors.has('model.embed_tokens.weight')).toBe(true);
      expect(loaded.tensors.has('model.norm.weight')).toBe(true);
      expect(loaded.tensorInfo.get('model.embed_tokens.weight')).toEqual({ shape: [ckpt.config.vocabSize, ckpt.config.hiddenSize], dtype: 'F16' });
      expect([...loaded.tensorInfo.keys()].sort()).toEqual([...loaded.tensors.keys()].sort());
      for (const name of loaded.tensors.keys()) expect(name).not.toMatch(/\.(qweight|qzeros|scales)$/);
      const rand = mulberry32(3);
      for (const name of ['model.layers.0.self_attn.q_proj', 'model.layers.5.mlp.gate_proj']) {
        const lin = loaded.linears.get(name)!;
        const ref = await dequantizeAwq(await ckpt.readLinear(name));
        const w = lin.dequantize();
        expect(w).toEqual(ref);
        // y = x W^T against a float64 product of the reader's weights.
        const x = new Float32Array(lin.inFeatures).map(() => rand() - 0.5);
        const y = await lin.forward(x, 1);
        for (let n = 0; n < lin.outFeatures; n += 37) {
          let acc = 0, mag = 0;
          for (let k = 0; k < lin.inFeatures; k++) (acc += x[k] * ref[n * lin.inFeatures + k]), (mag += Math.abs(x[k] * ref[n * lin.inFeatures + k]));
          expect(Math.abs(y[n] - acc)).toBeLessThanOrEqual((lin.inFeatures + 2) * 2 ** -23 * mag);
        }
      }
    } finally {
      await ckpt.close();
    }
    // the AWQ tensors are dropped unless asked for (they double the memory of the weights)
    for (const lin of loaded.linears.values()) expect(lin.awq).toBeNull();
    const kept = await loadAwq(dir, { keepAwq: true });
    expect(kept.linears.get('model.layers.0.self_attn.q_proj')!.awq?.qweight).toBeInstanceOf(Int32Array);
    await kept.dispose();
    await loaded.dispose();
    for (const lin of loaded.linears.values()) expect(lin.nativeBytes).toBe(0);
  });

  it('a load that fails part way disposes the linears it had built', async () => {
    const { out, linears } = await writeTinyCheckpoint({ nanScalesIn: 'model.layers.1.mlp.down_proj' });
    const disposed: string[] = [];
    const spy = vi.spyOn(Int4Linear.prototype, 'dispose').mockImplementation(async function (this: Int4Linear) {
      disposed.push(this.name ?? '');
    });
    try {
      await expect(loadAwq(out)).rejects.toThrow(NonFiniteError);
      expect(disposed.sort()).toEqual(linears.slice(0, -1).sort());
    } finally {
      spy.mockRestore();
    }
  });

  it('checks its options before any work and stops on its signal between tensors, disposing what it built', async () => {
    const { out, linears } = await writeTinyCheckpoint({});
    const bad: [object, RegExp][] = [
      [{ onProgress: 'yes' }, /onProgress: expected a function, got "yes"/],
      [{ keepAwq: 'false' }, /keepAwq: expected true or false, got "false"/],
      [{ signal: {} }, /signal: expected an AbortSignal/],
      [{ device: 'gpu' }, /device: expected 'cpu' or 'cuda', got "gpu"/],
      [{ widen: 'no' }, /widen: expected true or false, got "no"/],
    ];
    for (const [options, re] of bad) {
      const err = await loadAwq(out, options as never).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(re);
    }
    await expect(loadAwq(out, { signal: AbortSignal.abort() })).rejects.toThrow(AbortedError);
    // its events are ProgressEvents (a listener of quantize / evaluate serves) naming what was loaded
    const events: ProgressEvent[] = [];
    const listener: ProgressListener = (e) => events.push(e);
    const all = await loadAwq(out, { onProgress: listener });
    await all.dispose();
    expect(events.map((e) => [e.stage, e.completed, e.total])).toEqual(events.map((_, i) => ['load', i + 1, events.length]));
    expect(events.map((e) => (e as LoadProgressEvent).name).slice(0, linears.length)).toEqual(linears);
    expect(events.every((e) => e.message === (e as LoadProgressEvent).name && (e as LoadProgressEvent).done === e.completed && e.elapsedMs >= 0)).toBe(true);
    const disposed: string[] = [];
    const spy = vi.spyOn(Int4Linear.prototype, 'dispose').mockImplementation(async function (this: Int4Linear) {
      disposed.push(this.name ?? '');
    });
    try {
      const controller = new AbortController();
      const err = await loadAwq(out, { signal: controller.signal, onProgress: (e) => e.done === 2 && controller.abort() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AbortedError);
      expect(disposed.sort()).toEqual(linears.slice(0, 2).sort());
    } finally {
      spy.mockRestore();
    }
  });

  it('refuses a checkpoint that is not a whole model, naming what is missing; ignores biases the architecture has no module for', async () => {
    // without layer 1's down_proj: a serving backend would meet the hole at its first forward
    const { out } = await writeTinyCheckpoint({ omit: 'model.layers.1.mlp.down_proj' });
    await expect(loadAwq(out)).rejects.toThrow(/no quantized or dense weights for model\.layers\.1\.mlp\.down_proj/);
    await expect(loadAwq(out)).rejects.toThrow(BadCheckpointError);
    // a q_proj bias on a llama without attention_bias: Transformers drops it, so do we
    const biased = await writeTinyCheckpoint({ biasOn: 'model.layers.0.self_attn.q_proj' });
    const loaded = await loadAwq(biased.out);
    expect(loaded.linears.get('model.layers.0.self_attn.q_proj')!.forwardSync(new Float32Array(16), 1)).toEqual(new Float32Array(16));
    expect([...loaded.tensors.keys()]).not.toContain('model.layers.0.self_attn.q_proj.bias');
    await loaded.dispose();
    // with attention_bias the same tensor is the q_proj's bias
    const used = await writeTinyCheckpoint({ biasOn: 'model.layers.0.self_attn.q_proj', attentionBias: true });
    const withBias = await loadAwq(used.out);
    expect(withBias.linears.get('model.layers.0.self_attn.q_proj')!.forwardSync(new Float32Array(16), 1)).toEqual(new Float32Array(16).fill(0.5));
    await withBias.dispose();
  });

  it('widen: false hands fp16 / bf16 tensors over as stored (toFloat32 gives the widened load\'s values), others as fp32; denseGemm takes them as b', async () => {
    const { out } = await writeTinyCheckpoint({ extra: 'model.extra_buffer', seed: 9 });
    retypeTensor(out, 'model.norm.weight', 'BF16', exactHalfBits(Float32Array.from({ length: 16 }, (_, i) => 1 + i / 8), 'BF16'));
    retypeTensor(out, 'model.extra_buffer', 'F32', Float32Array.from([1, 2, 3, 4]));
    const widened = await loadAwq(out);
    const stored = await loadAwq(out, { widen: false });
    try {
      expect([...stored.tensors.keys()].sort()).toEqual([...widened.tensors.keys()].sort());
      const dtypes: Record<string, string> = { 'model.norm.weight': 'bf16', 'model.extra_buffer': 'F32' };
      for (const [name, t] of stored.tensors) {
        const want = widened.tensors.get(name)!;
        if (t instanceof Float32Array) {
          expect(dtypes[name], name).toBe('F32');
          expect(t).toEqual(want);
        } else {
          expect(t.dtype, name).toBe(dtypes[name] ?? 'fp16');
          expect(t.data).toBeInstanceOf(Uint16Array);
          expect(toFloat32(t), name).toEqual(want);
        }
      }
      // the tied lm_head's product on one token, from the stored table: bitwise the widened one's
      const embed = stored.tensors.get('model.embed_tokens.weight')!;
      const x = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i));
      const product = (b: Float32Array | HalfArray) => denseGemm({ a: x, b, m: 1, n: 4, k: 16, transB: true });
      expect(await product(embed)).toEqual(await product(widened.tensors.get('model.embed_tokens.weight')!));
      expect(stored.linears.get('model.layers.1.mlp.up_proj')!.dequantize()).toEqual(widened.linears.get('model.layers.1.mlp.up_proj')!.dequantize());
    } finally {
      await stored.dispose();
      await widened.dispose();
    }
  });

  it('BF16 and F32 scales load as the F16 scales of the same values', async () => {
    const ref = await loadAwq((await writeTinyCheckpoint({ seed: 5 })).out);
    for (const dtype of ['BF16', 'F32'] as const) {
      const { out, linears } = await writeTinyCheckpoint({ seed: 5, scalesDtype: dtype });
      const ckpt = await openAwqCheckpoint(out);
      expect(ckpt.folder.info(`${linears[0]}.scales`).dtype).toBe(dtype);
      await ckpt.close();
      const loaded = await loadAwq(out);
      for (const name of linears) {
        const w = loaded.linears.get(name)!.dequantize();
        expect(w.some((v) => v !== 0)).toBe(true);
        expect(w, `${dtype} ${name}`).toEqual(ref.linears.get(name)!.dequantize());
      }
      await loaded.dispose();
    }
    await ref.dispose();
  });

  it('a stale index entry (the lm_head.weight of a tied model) is no error; where the model needs that tensor, the message says what the index claims', async () => {
    const { out } = await writeTinyCheckpoint({ maxShardBytes: 2000 });
    const indexPath = join(out, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8'));
    const shard = index.weight_map['model.embed_tokens.weight'];
    writeFileSync(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, 'lm_head.weight': shard } }));
    const loaded = await loadAwq(out);
    expect(loaded.tensors.has('lm_head.weight')).toBe(false);
    await loaded.dispose();
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    writeFileSync(join(out, 'config.json'), JSON.stringify({ ...config, tie_word_embeddings: false }));
    const err = await loadAwq(out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect((err as Error).message).toBe(`${out}: no tensor named 'lm_head.weight' (model.safetensors.index.json maps it to '${shard}', but no shard it lists holds it)`);
  });

  it('refuses an integer dtype where the model reads floats, naming the tensor; a tensor no module reads is handed over as stored', async () => {
    const { out } = await writeTinyCheckpoint({ extra: 'model.extra_buffer' });
    retypeTensor(out, 'model.extra_buffer', 'I16'); // F16 1, 2, 3, 4 relabelled: 15360, 16384, 16896, 17408
    const loaded = await loadAwq(out);
    expect(Array.from(loaded.tensors.get('model.extra_buffer')!)).toEqual([15360, 16384, 16896, 17408]);
    expect(loaded.tensorInfo.get('model.extra_buffer')).toEqual({ shape: [4], dtype: 'I16' });
    await loaded.dispose();
    for (const name of ['model.layers.1.input_layernorm.weight', 'model.embed_tokens.weight']) {
      const bad = await writeTinyCheckpoint({});
      retypeTensor(bad.out, name, 'I16');
      const err = await loadAwq(bad.out).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(BadCheckpointError);
      expect((err as Error).message).toMatch(new RegExp(`\\.safetensors: tensor '${name.replaceAll('.', '\\.')}' has dtype I16, but it is read as floating-point weights: accepted dtypes are F32, F16 and BF16$`));
    }
  });
});

/**
 * A whole two-layer llama (hidden 16, group size 16) as an AWQ checkpoint of zero weights (q = zero
 * point = 0, scale 1), with options to damage it. Returns its folder and the linears in file order.
 * `seed`: random qweight / qzeros and scales (values bf16 holds exactly), stored in `scalesDtype`.
 */
async function writeTinyCheckpoint(opts: {
  nanScalesIn?: string; omit?: string; biasOn?: string; attentionBias?: boolean; extra?: string; seed?: number; scalesDtype?: 'BF16' | 'F32';
  maxShardBytes?: number;
}) {
  const g = 16;
  const config = llamaConfig({
    hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8,
    vocab_size: 4, tie_word_embeddings: true, attention_bias: opts.attentionBias ?? false,
  });
  const src = scratchDir('load-awq-src-');
  writeFileSync(join(src, 'config.json'), JSON.stringify(config));
  const out = join(scratchDir('load-awq-'), 'ck');
  const w = await AwqCheckpointWriter.create(out, { sourceDir: src, maxShardBytes: opts.maxShardBytes });
  const shapes: [string, number, number][] = [
    ['self_attn.q_proj', 16, 16], ['self_attn.k_proj', 16, 8], ['self_attn.v_proj', 16, 8], ['self_attn.o_proj', 16, 16],
    ['mlp.gate_proj', 16, 32], ['mlp.up_proj', 16, 32], ['mlp.down_proj', 32, 16],
  ];
  const linears: string[] = [];
  const scales = new Map<string, Float32Array>();
  const rand = mulberry32(opts.seed ?? 0);
  const words = (n: number) => (opts.seed === undefined ? new Int32Array(n) : Int32Array.from({ length: n }, () => (rand() * 2 ** 32) | 0));
  for (let i = 0; i < 2; i++) {
    for (const [module, inFeatures, outFeatures] of shapes) {
      const name = `model.layers.${i}.${module}`;
      if (name === opts.omit) continue;
      const s = new Float32Array((inFeatures / g) * outFeatures).map(() => (opts.seed === undefined ? 1 : (1 + Math.floor(rand() * 8) / 8) * 2 ** -Math.floor(rand() * 10)));
      scales.set(name, s);
      await w.addLinear({
        name, inFeatures, outFeatures, groupSize: g,
        qweight: words((inFeatures * outFeatures) / 8),
        qzeros: words((inFeatures / g) * (outFeatures / 8)),
        scales: name === opts.nanScalesIn ? new Uint16Array(s.length).fill(0x7e00) : exactHalfBits(s, 'F16'),
        ...(name === opts.biasOn ? { bias: new Uint16Array(outFeatures).fill(0x3800) } : {}), // 0.5
      });
      linears.push(name);
    }
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) await w.addTensor(`model.layers.${i}.${norm}.weight`, [16], new Float32Array(16).fill(1));
  }
  await w.addTensor('model.embed_tokens.weight', [4, 16], new Float32Array(64).fill(0.25));
  await w.addTensor('model.norm.weight', [16], new Float32Array(16).fill(1));
  if (opts.extra) await w.addTensor(opts.extra, [4], new Float32Array([1, 2, 3, 4])); // read by no module
  await w.finish(config, { groupSize: g });
  const dtype = opts.scalesDtype;
  if (dtype) for (const [name, s] of scales) retypeTensor(out, `${name}.scales`, dtype, dtype === 'F32' ? s : exactHalfBits(s, dtype));
  return { out, linears };
}
