import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it, vi } from 'vitest';

import { AwqCheckpointWriter, dequantizeAwq, Int4Linear, loadAwq, NonFiniteError, openAwqCheckpoint } from '../dist/index.js';
import { llamaConfig } from './helpers/fixtures.js';
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
    const src = scratchDir('load-awq-src-');
    // down_proj of 128 -> 8 in each of two layers (the shapes config.json implies)
    const config = llamaConfig({ hidden_size: 8, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4 });
    writeFileSync(join(src, 'config.json'), JSON.stringify(config));
    const out = join(scratchDir('load-awq-'), 'ck');
    const w = await AwqCheckpointWriter.create(out, { sourceDir: src });
    const linear = (name: string, scale: number) => ({
      name, inFeatures: 128, outFeatures: 8, groupSize: 128,
      qweight: new Int32Array(128), qzeros: new Int32Array(1), scales: new Uint16Array(8).fill(scale),
    });
    await w.addLinear(linear('model.layers.0.mlp.down_proj', 0x3c00)); // 1.0
    await w.addLinear(linear('model.layers.1.mlp.down_proj', 0x7e00)); // NaN: refused by Int4Linear.fromAwq
    await w.finish(config, { groupSize: 128 });
    const disposed: string[] = [];
    const spy = vi.spyOn(Int4Linear.prototype, 'dispose').mockImplementation(async function (this: Int4Linear) {
      disposed.push(this.name ?? '');
    });
    try {
      await expect(loadAwq(out)).rejects.toThrow(NonFiniteError);
      expect(disposed).toEqual(['model.layers.0.mlp.down_proj']);
    } finally {
      spy.mockRestore();
    }
  });
});
