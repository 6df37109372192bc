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
 * Relabels tensor `name` of a safetensors file in `dir` as `dtype`: with no `data` its bytes stay (a
 * header that says integer where the data are floats: the same element size), else `data` replaces
 * them (the other tensors' offsets follow).
 */
export function retypeTensor(dir: string, name: string, dtype: string, data?: ArrayBufferView): void {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
    const bytes = readFileSync(join(dir, file));
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
    if (!header[name]) continue;
    header[name].dtype = dtype;
    const body = bytes.subarray(8 + n);
    if (data === undefined) {
      writeFileSync(join(dir, file), safetensorsBytes(header, body));
      return;
    }
    const parts: Uint8Array[] = [];
    let offset = 0;
    const entries = Object.entries(header).filter(([key]) => key !== '__metadata__').sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
    for (const [key, t] of entries) {
      const part = key === name ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : body.subarray(...t.data_offsets);
      t.data_offsets = [offset, offset + part.byteLength];
      offset += part.byteLength;
      parts.push(part);
    }
    writeFileSync(join(dir, file), safetensorsBytes(header, Buffer.concat(parts)));
    return;
  }
  throw new Error(`retypeTensor: no tensor '${name}' in ${dir}`);
}

/**
 * fp16 or bf16 bits of values the format holds exactly (fp16: in its normal range, or zero), as
 * test data are chosen; any other value throws.
 */
export function exactHalfBits(values: Float32Array, dtype: 'F16' | 'BF16'): Uint16Array {
  return Uint16Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length), (b, i) => {
    if (dtype === 'BF16' && (b & 0xffff) === 0) return b >>> 16;
    const e = ((b >>> 23) & 255) - 112; // fp16's biased exponent
    if (dtype === 'F16' && (b & 0x7fffffff) === 0) return b >>> 16;
    if (dtype === 'F16' && (b & 0x1fff) === 0 && e >= 1 && e <= 30) return ((b >>> 16) & 0x8000) | (e << 10) | ((b >>> 13) & 1023);
    throw new Error(`exactHalfBits: ${values[i]} is not exact in ${dtype}`);
  });
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
