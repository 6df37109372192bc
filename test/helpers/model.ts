/**
 * A small reader for the test model (bf16 sharded safetensors) so the numerics can be checked end
 * to end before the checkpoint module exists: 8-byte LE header length, JSON header, raw data.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { LayerArch, LayerWeights } from '../../dist/index.js';

export const SHARED = join(import.meta.dirname, '..', '..', '..', 'shared');
export const MODEL_DIR = join(SHARED, 'models', 'llama-22m');
export const hasShared = existsSync(join(MODEL_DIR, 'config.json'));

interface Entry { dtype: string; shape: number[]; data_offsets: [number, number] }

export class Model {
  readonly config: Record<string, number | string | boolean | null>;
  private readonly shards = new Map<string, { header: Record<string, Entry>; data: Buffer; base: number }>();
  private readonly weightMap: Record<string, string>;

  constructor(readonly dir: string) {
    this.config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    this.weightMap = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map;
  }

  tensor(name: string): Float32Array {
    const file = this.weightMap[name];
    if (!file) throw new Error(`tensor ${name} not in the index`);
    let shard = this.shards.get(file);
    if (!shard) {
      const data = readFileSync(join(this.dir, file));
      const n = Number(data.readBigUInt64LE(0));
      shard = { header: JSON.parse(data.subarray(8, 8 + n).toString('utf8')), data, base: 8 + n };
      this.shards.set(file, shard);
    }
    const e = shard.header[name];
    if (e.dtype !== 'BF16') throw new Error(`${name}: expected BF16, got ${e.dtype}`);
    const [b0, b1] = e.data_offsets;
    const count = (b1 - b0) / 2;
    const out = new Float32Array(count);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = shard.data.readUInt16LE(shard.base + b0 + 2 * i) << 16;
    return out;
  }

  arch(): LayerArch {
    const c = this.config as Record<string, number>;
    const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
    const inv = new Float32Array(headDim / 2);
    for (let i = 0; i < headDim / 2; i++) inv[i] = 1 / Math.pow(c.rope_theta, (2 * i) / headDim);
    return {
      hiddenSize: c.hidden_size, intermediateSize: c.intermediate_size, numHeads: c.num_attention_heads,
      numKvHeads: c.num_key_value_heads, headDim, rmsNormEps: c.rms_norm_eps, ropeInvFreq: inv, qkNorm: false,
    };
  }

  layer(i: number): LayerWeights {
    const p = `model.layers.${i}.`;
    return {
      inputNorm: this.tensor(p + 'input_layernorm.weight'), postNorm: this.tensor(p + 'post_attention_layernorm.weight'),
      q: this.tensor(p + 'self_attn.q_proj.weight'), k: this.tensor(p + 'self_attn.k_proj.weight'),
      v: this.tensor(p + 'self_attn.v_proj.weight'), o: this.tensor(p + 'self_attn.o_proj.weight'),
      gate: this.tensor(p + 'mlp.gate_proj.weight'), up: this.tensor(p + 'mlp.up_proj.weight'), down: this.tensor(p + 'mlp.down_proj.weight'),
    };
  }

  /** Rows of the embedding for `ids`. */
  embed(ids: Int32Array): Float32Array {
    const E = this.tensor('model.embed_tokens.weight');
    const H = this.config.hidden_size as number;
    const out = new Float32Array(ids.length * H);
    for (let t = 0; t < ids.length; t++) out.set(E.subarray(ids[t] * H, (ids[t] + 1) * H), t * H);
    return out;
  }
}

/** Token ids of the whole eval text (no special tokens), through @huggingface/tokenizers. */
export async function tokenize(dir: string, text: string): Promise<Int32Array> {
  const { Tokenizer } = await import('@huggingface/tokenizers');
  const tok = new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
  return Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids);
}
