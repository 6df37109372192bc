import { existsSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { dequantizeAwq, loadAwq, openAwqCheckpoint } from '../dist/index.js';
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
  });
});
