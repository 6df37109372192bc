/**
 * Writes a tiny random Llama-family model folder (safetensors + config.json + the test
 * tokenizer when available) for fast pipeline tests: structure, errors, abort.
 */
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { SafetensorsWriter } from '../../dist/index.js';
import { gaussian, mulberry32 } from './random.js';
import { modelDir } from './shared.js';
import { scratchDir } from './scratch.js';

export interface TinyModelOptions {
  modelType?: 'llama' | 'mistral' | 'qwen2' | 'qwen3';
  hidden?: number;
  intermediate?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  vocab?: number;
  tie?: boolean;
  seed?: number;
  /** Put a NaN into this tensor (bad-input tests). */
  nanTensor?: string;
  /** Store this 2-D tensor with its shape reversed (bad-input tests). */
  transposedTensor?: string;
  /** Multiply this tensor's values (bad-input tests: values that overflow a forward). */
  scaleTensor?: { name: string; by: number };
  /** Tensors left out of the folder (bad-input tests). */
  omitTensors?: string[];
  /** Extra 1-D tensors of 4 values that no architecture reads. */
  extraTensors?: string[];
  /** Store these tensors in another dtype than F32 (I16: the values x 1000, rounded; bad-input tests). */
  dtypes?: Record<string, 'F16' | 'BF16' | 'I16'>;
}

/** fp32 -> fp16 bits, round to nearest (no overflow handling: the tiny models' values are small). */
function toF16(v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24); // subnormal (1024 is the smallest normal)
  let e = Math.floor(Math.log2(a));
  if (a / 2 ** e >= 2) e++;
  if (a / 2 ** e < 1) e--;
  return sign | (((e + 15) << 10) + Math.round((a / 2 ** e - 1) * 1024)); // a mantissa of 1024 carries
}

/** `data` in `dtype`, as the bytes SafetensorsWriter.add takes. */
function encode(data: Float32Array, dtype: 'F32' | 'F16' | 'BF16' | 'I16'): ArrayBufferView {
  switch (dtype) {
    case 'F32': return data;
    case 'F16': return Uint16Array.from(data, toF16);
    case 'BF16': return Uint16Array.from(new Uint32Array(data.buffer, data.byteOffset, data.length), (b) => b >>> 16); // truncated
    case 'I16': return Int16Array.from(data, (v) => Math.round(v * 1000));
  }
}

export async function writeTinyModel(o: TinyModelOptions = {}): Promise<string> {
  const modelType = o.modelType ?? 'llama';
  const hidden = o.hidden ?? 128;
  const inter = o.intermediate ?? 256;
  const layers = o.layers ?? 2;
  const heads = o.heads ?? 4;
  const kvHeads = o.kvHeads ?? 2;
  const headDim = o.headDim ?? hidden / heads;
  const vocab = o.vocab ?? 8192;
  const tie = o.tie ?? true;
  const randn = gaussian(mulberry32(o.seed ?? 1));
  const dir = scratchDir('awq-tiny-');
  const w = await SafetensorsWriter.create(dir, { maxShardBytes: 1 << 20 });
  const add = async (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = mean + std * randn();
    if (name === o.nanTensor) data[n >> 1] = Number.NaN;
    if (name === o.scaleTensor?.name) for (let i = 0; i < n; i++) data[i] *= o.scaleTensor.by;
    const dtype = o.dtypes?.[name] ?? 'F32';
    if (o.omitTensors?.includes(name)) return;
    await w.add(name, dtype, name === o.transposedTensor ? [...shape].reverse() : shape, encode(data, dtype));
  };
  await add('model.embed_tokens.weight', [vocab, hidden], 1);
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    await add(`${p}.input_layernorm.weight`, [hidden], 0.1, 1);
    await add(`${p}.post_attention_layernorm.weight`, [hidden], 0.1, 1);
    await add(`${p}.self_attn.q_proj.weight`, [heads * headDim, hidden], 0.05);
    await add(`${p}.self_attn.k_proj.weight`, [kvHeads * headDim, hidden], 0.05);
    await add(`${p}.self_attn.v_proj.weight`, [kvHeads * headDim, hidden], 0.05);
    await add(`${p}.self_attn.o_proj.weight`, [hidden, heads * headDim], 0.05);
    if (modelType === 'qwen2') {
      await add(`${p}.self_attn.q_proj.bias`, [heads * headDim], 0.05);
      await add(`${p}.self_attn.k_proj.bias`, [kvHeads * headDim], 0.05);
      await add(`${p}.self_attn.v_proj.bias`, [kvHeads * headDim], 0.05);
    }
    if (modelType === 'qwen3') {
      await add(`${p}.self_attn.q_norm.weight`, [headDim], 0.1, 1);
      await add(`${p}.self_attn.k_norm.weight`, [headDim], 0.1, 1);
    }
    await add(`${p}.mlp.gate_proj.weight`, [inter, hidden], 0.05);
    await add(`${p}.mlp.up_proj.weight`, [inter, hidden], 0.05);
    await add(`${p}.mlp.down_proj.weight`, [hidden, inter], 0.05);
  }
  await add('model.norm.weight', [hidden], 0.1, 1);
  if (!tie) await add('lm_head.weight', [vocab, hidden], 0.05);
  for (const name of o.extraTensors ?? []) await add(name, [4], 1);
  await w.finish();
  const config: Record<string, unknown> = {
    architectures: [modelType === 'llama' ? 'LlamaForCausalLM' : `${modelType[0].toUpperCase()}${modelType.slice(1)}ForCausalLM`],
    model_type: modelType,
    hidden_size: hidden,
    intermediate_size: inter,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    vocab_size: vocab,
    max_position_embeddings: 2048,
    tie_word_embeddings: tie,
    hidden_act: 'silu',
    torch_dtype: 'float32',
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (existsSync(join(modelDir, 'tokenizer.json'))) {
    copyFileSync(join(modelDir, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    copyFileSync(join(modelDir, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  }
  return dir;
}
