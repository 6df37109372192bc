/** Hand-built checkpoint files for tests, written without the package's own writer. */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** Bytes of a safetensors file: u64 LE header length, header text, data. */
export function safetensorsBytes(header: unknown, data: Uint8Array, opts: { headerLength?: bigint; rawHeader?: string } = {}): Uint8Array {
  const text = new TextEncoder().encode(opts.rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + text.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, opts.headerLength ?? BigInt(text.byteLength), true);
  out.set(text, 8);
  out.set(data, 8 + text.byteLength);
  return out;
}

/**
 * Relabels tensor `name` of a safetensors file in `dir` as `dtype` (of the same element size),
 * leaving its bytes alone: a header that says integer where the data are floats.
 */
export function retypeTensor(dir: string, name: string, dtype: string): void {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
    const bytes = readFileSync(join(dir, file));
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string }>;
    if (!header[name]) continue;
    header[name].dtype = dtype;
    writeFileSync(join(dir, file), safetensorsBytes(header, bytes.subarray(8 + n)));
    return;
  }
  throw new Error(`retypeTensor: no tensor '${name}' in ${dir}`);
}

export function tmpDir(prefix = 'awq-test-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A small llama config.json object. */
export function llamaConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    vocab_size: 32,
    max_position_embeddings: 128,
    tie_word_embeddings: false,
    torch_dtype: 'float32',
    ...over,
  };
}

export function writeJson(path: string, v: unknown): void {
  writeFileSync(path, JSON.stringify(v));
}

/** The shared test models (`../shared` relative to the repository root, where vitest runs). */
export const MODELS = resolve('../shared/models');
export const LLAMA = join(MODELS, 'llama-22m');
export const LLAMA_AWQ = join(MODELS, 'llama-22m-awq');
export const HAVE_MODELS = existsSync(join(LLAMA, 'config.json')) && existsSync(join(LLAMA_AWQ, 'config.json'));
if (!HAVE_MODELS) {
  console.warn(`SKIPPING tests on the real models: ${MODELS}/llama-22m and llama-22m-awq not found (../shared is absent)`);
}
