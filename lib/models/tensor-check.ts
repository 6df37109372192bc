/**
 * Is every tensor the architecture reads in the folder, as floating point (F32 / F16 / BF16), with
 * the shape the config implies? Checked from the headers before any work, by the quantizer (a model
 * missing its last layer or its lm_head fails in seconds, not after hours of layers), by `eval` of
 * a dense model, and by the AWQ reader (`inspect`, `eval`, `loadAwq` refuse an incomplete
 * checkpoint alike, rather than `loadAwq` returning a model with a hole).
 */
import { isFloatDtype, notFloatError, type Dtype } from '../checkpoint/dtypes.js';
import { BadCheckpointError } from '../errors.js';
import { LINEAR_NAMES, type ArchitectureAdapter } from './adapters.js';
import type { ModelConfig } from './config.js';

/** The headers of a model folder, dense or AWQ. */
export interface TensorHeaders {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly adapter: ArchitectureAdapter;
  hasTensor(name: string): boolean;
  /** Stored shape of a present tensor (undefined where the reader checks shapes itself). */
  storedShape(name: string): readonly number[] | undefined;
  /** Stored dtype of a present tensor (undefined where the reader checks dtypes itself). */
  storedDtype(name: string): Dtype | undefined;
  /** The file that holds a present tensor (for messages). */
  tensorFile(name: string): string;
  tensorNames(): string[];
  /** Why a tensor is absent, for the message (e.g. a stale index entry: WeightFiles.absentNote). */
  absentNote?(name: string): string;
}

/**
 * Throws a BadCheckpointError naming the first missing tensor, or the first one stored with a dtype
 * other than F32 / F16 / BF16 or a shape other than the config implies. `packed` holds the module
 * prefixes stored as AWQ linears (their qweight / qzeros / scales dtypes and shapes are the AWQ
 * reader's to check); every other decoder linear needs a dense `.weight`. Returns the tensors
 * no part of the architecture reads (biases it builds no module for among them), and the biases it
 * builds that the folder lacks (Transformers starts them at zero).
 */
export function checkModelTensors(
  model: TensorHeaders,
  packed: ReadonlySet<string> = new Set(),
): { unused: string[]; missingBiases: string[] } {
  const a = model.adapter;
  const c = model.config;
  const used = new Set<string>();
  const missingBiases: string[] = [];
  const expect = (name: string | undefined, shape: number[], optional = false) => {
    if (name === undefined) return;
    used.add(name);
    if (!model.hasTensor(name)) {
      if (optional) {
        missingBiases.push(name);
        return;
      }
      throw new BadCheckpointError(`${model.dir}: no tensor named '${name}'${model.absentNote?.(name) ?? ''}`);
    }
    // Every tensor checked here is read as floating point (dense weights, biases, norms, embeddings).
    const dtype = model.storedDtype(name);
    if (dtype !== undefined && !isFloatDtype(dtype)) throw notFloatError(model.tensorFile(name), name, dtype);
    const stored = model.storedShape(name);
    if (stored !== undefined && stored.join() !== shape.join()) {
      throw new BadCheckpointError(`${model.dir}: tensor ${name} has shape [${stored}], the config implies [${shape}]`);
    }
  };
  expect(a.embedTokens, [c.vocabSize, c.hiddenSize]);
  expect(a.finalNorm, [c.hiddenSize]);
  if (!c.tieWordEmbeddings) expect(a.lmHead, [c.vocabSize, c.hiddenSize]);
  for (let i = 0; i < c.numLayers; i++) {
    for (const name of LINEAR_NAMES) {
      const prefix = a.linear(i, name);
      const [out, inF] = a.linearShape(name);
      if (packed.has(prefix)) {
        for (const part of ['qweight', 'qzeros', 'scales']) used.add(`${prefix}.${part}`);
      } else if (packed.size > 0 && !model.hasTensor(`${prefix}.weight`)) {
        throw new BadCheckpointError(`${model.dir}: no quantized or dense weights for ${prefix} (no '${prefix}.qweight', no '${prefix}.weight')`);
      } else {
        expect(`${prefix}.weight`, [out, inF]);
      }
      expect(a.biasOf(prefix), [out], true);
    }
    expect(a.inputNorm(i), [c.hiddenSize]);
    expect(a.postNorm(i), [c.hiddenSize]);
    expect(a.qNorm(i), [c.headDim]);
    expect(a.kNorm(i), [c.headDim]);
  }
  // RoPE's inv_freq buffers, which some older checkpoints saved, are recomputed by every loader.
  return { unused: model.tensorNames().filter((n) => !used.has(n) && !/\.rotary_emb\.inv_freq$/.test(n)), missingBiases };
}
