/**
 * One view over the weights of a model folder, dense (Hugging Face) or AWQ: tensors as fp32,
 * and each linear as a dense fp32 `[out, in]` weight. For AWQ folders the linear is the packed
 * checkpoint dequantized as written, so a packing bug shows up in evaluation.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { dequantizeAwq, LEGACY_QUANT_CONFIG, openAwqCheckpoint, type AwqQuantization } from '../checkpoint/awq-format.js';
import { ModelFolder } from '../checkpoint/model-folder.js';
import { BadCheckpointError, NonFiniteError } from '../errors.js';
import { toFloat32, type HalfArray } from '../half.js';
import { native } from '../native.js';
import type { LayerWeights, LinearName } from '../quantize/layer.js';
import { adapterFor, LINEAR_NAMES, type ArchitectureAdapter } from './adapters.js';
import type { TensorHeaders } from './tensor-check.js';

export { checkModelTensors } from './tensor-check.js';

/** The headers (dir, config, adapter, tensor names and stored shapes) and the data of a model. */
export interface ModelWeights extends TensorHeaders {
  /** AWQ quantization settings when the folder is an AWQ checkpoint. */
  readonly quantization: AwqQuantization | null;
  readTensor(name: string): Promise<Float32Array>;
  /** An fp16 / bf16 tensor as stored (half the memory of readTensor's fp32), others as readTensor. */
  readStored(name: string): Promise<Float32Array | HalfArray>;
  /** A linear's `[out, in]` weight and its bias where the architecture builds one (adapter.biasOf). */
  readLinear(prefix: string): Promise<{ weight: Float32Array; bias?: Float32Array }>;
  /** config.json as read. */
  readonly rawConfig: Record<string, unknown>;
  close(): Promise<void>;
}

/** config.json names a quantization_config, or AutoAWQ's older quant_config.json is there. */
async function isAwqFolder(dir: string): Promise<boolean> {
  try {
    const raw = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { quantization_config?: unknown };
    if (raw.quantization_config !== undefined && raw.quantization_config !== null) return true;
  } catch {
    return false; // ModelFolder.open reports missing / malformed config.json precisely
  }
  return existsSync(join(dir, LEGACY_QUANT_CONFIG));
}

async function fp16ToF32(h: Uint16Array): Promise<Float32Array> {
  const out = new Float32Array(h.length);
  await native().convertToF32(h, 'F16', out);
  return out;
}

export async function openModelWeights(dir: string): Promise<ModelWeights> {
  if (await isAwqFolder(dir)) {
    const ckpt = await openAwqCheckpoint(dir);
    try {
      ckpt.checkComplete();
    } catch (err) {
      await ckpt.close();
      throw err;
    }
    const folder = ckpt.folder;
    const linears = new Set(ckpt.linearNames());
    const adapter = adapterFor(ckpt.config);
    return {
      dir,
      config: ckpt.config,
      adapter,
      quantization: ckpt.quantization,
      readTensor: (name) => ckpt.readF32(name),
      readStored: (name) => folder.readStored(name),
      hasTensor: (name) => folder.has(name),
      tensorNames: () => folder.tensorNames(),
      storedShape: (name) => (folder.has(name) ? folder.info(name).shape : undefined),
      storedDtype: (name) => (folder.has(name) ? folder.info(name).dtype : undefined),
      tensorFile: (name) => folder.info(name).file,
      absentNote: (name) => folder.weights.absentNote(name),
      async readLinear(prefix) {
        if (!linears.has(prefix)) {
          if (folder.has(`${prefix}.weight`)) return readDenseLinear(folder, adapter, prefix);
          throw new BadCheckpointError(`${dir}: no quantized or dense weights for ${prefix}`);
        }
        const t = await ckpt.readLinear(prefix);
        return { weight: await dequantizeAwq(t), bias: t.bias ? await fp16ToF32(t.bias) : undefined };
      },
      rawConfig: folder.rawConfig,
      close: () => folder.close(),
    };
  }
  const folder = await ModelFolder.open(dir);
  const adapter = adapterFor(folder.config);
  return {
    dir,
    config: folder.config,
    adapter,
    quantization: null,
    readTensor: (name) => folder.readF32(name),
    readStored: (name) => folder.readStored(name),
    hasTensor: (name) => folder.has(name),
    tensorNames: () => folder.tensorNames(),
    storedShape: (name) => folder.info(name).shape,
    storedDtype: (name) => folder.info(name).dtype,
    tensorFile: (name) => folder.info(name).file,
    absentNote: (name) => folder.weights.absentNote(name),
    readLinear: (prefix) => readDenseLinear(folder, adapter, prefix),
    rawConfig: folder.rawConfig,
    close: () => folder.close(),
  };
}

/** A dense linear, with its bias where the architecture builds one (adapter.biasOf). */
async function readDenseLinear(folder: ModelFolder, adapter: ArchitectureAdapter, prefix: string): Promise<{ weight: Float32Array; bias?: Float32Array }> {
  const biasName = adapter.biasOf(prefix);
  const bias = biasName !== undefined && folder.has(biasName) ? await folder.readF32(biasName) : undefined;
  return { weight: await folder.readF32(`${prefix}.weight`), bias };
}

function wrongShape(model: ModelWeights, name: string, stored: readonly number[], shape: readonly number[]): BadCheckpointError {
  return new BadCheckpointError(`${model.dir}: tensor ${name} has shape [${stored}], the config implies [${shape}]`);
}

/** Loads decoder layer `i` as fp32 `LayerWeights`, checking every shape against the config. */
export async function loadLayerWeights(model: ModelWeights, i: number): Promise<LayerWeights> {
  const a = model.adapter;
  const h = model.config.hiddenSize;
  // The stored shape, not only the element count: a transposed [in, out] weight has the right
  // count and would be read as garbage.
  const expectShape = (name: string, data: Float32Array, shape: number[]) => {
    const stored = model.storedShape(name);
    const n = shape.reduce((x, y) => x * y, 1);
    if (data.length !== n || (stored !== undefined && stored.join() !== shape.join())) {
      throw wrongShape(model, name, stored ?? [data.length], shape);
    }
    return data;
  };
  const linear: Partial<Record<LinearName, { weight: Float32Array; bias?: Float32Array }>> = {};
  for (const name of LINEAR_NAMES) {
    const prefix = a.linear(i, name);
    const l = await model.readLinear(prefix);
    const [out, inF] = a.linearShape(name);
    expectShape(`${prefix}.weight`, l.weight, [out, inF]);
    if (l.bias) expectShape(`${prefix}.bias`, l.bias, [out]);
    linear[name] = l;
  }
  const norm = async (name: string | undefined, n: number) =>
    name ? expectShape(name, await model.readTensor(name), [n]) : undefined;
  return {
    inputNorm: (await norm(a.inputNorm(i), h))!,
    postNorm: (await norm(a.postNorm(i), h))!,
    q: linear.q_proj!.weight,
    k: linear.k_proj!.weight,
    v: linear.v_proj!.weight,
    o: linear.o_proj!.weight,
    gate: linear.gate_proj!.weight,
    up: linear.up_proj!.weight,
    down: linear.down_proj!.weight,
    qBias: linear.q_proj!.bias,
    kBias: linear.k_proj!.bias,
    vBias: linear.v_proj!.bias,
    oBias: linear.o_proj!.bias,
    qNorm: await norm(a.qNorm(i), model.config.headDim),
    kNorm: await norm(a.kNorm(i), model.config.headDim),
  };
}

/** Embedding rows of `tokens`: the hidden states entering layer 0 (a 16-bit table's rows widened). */
export function embed(table: Float32Array | HalfArray, hidden: number, tokens: Int32Array): Float32Array {
  if (table instanceof Float32Array) return gatherRows(table, new Float32Array(tokens.length * hidden), hidden, tokens);
  return toFloat32({ data: gatherRows(table.data, new Uint16Array(tokens.length * hidden), hidden, tokens), dtype: table.dtype });
}

/** `out` holds the rows of `table` that `tokens` name, in order. */
function gatherRows<T extends Float32Array | Uint16Array>(table: T, out: T, hidden: number, tokens: Int32Array): T {
  const vocab = table.length / hidden;
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t];
    if (id < 0 || id >= vocab) throw new BadCheckpointError(`token id ${id} is outside the embedding table (${vocab} rows)`);
    out.set(table.subarray(id * hidden, (id + 1) * hidden), t * hidden);
  }
  return out;
}

/**
 * Runs a native step on decoder layer `i`, naming the folder and the layer in a NonFiniteError
 * (native code knows only the tensor's short name, e.g. `up_proj.weight`).
 */
export async function inLayer<T>(model: ModelWeights, i: number, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (!(err instanceof NonFiniteError)) throw err;
    const packed = model.quantization && /_proj\.weight/.test(err.message) ? ' (the weight dequantized from its AWQ qweight, qzeros and scales)' : '';
    throw new NonFiniteError(`${model.dir}: layer ${i}: ${err.message}${packed}`, { cause: err });
  }
}
