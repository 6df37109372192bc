/**
 * Hugging Face `config.json` to a typed model description for the decoder-only architectures
 * this package handles. Fields the Transformers config classes give defaults for may be absent
 * (the same defaults apply); a present field of the wrong type, or an absent required one, is a
 * `BadConfigError` naming the field and the file.
 */
import { BadConfigError, InvalidArgumentError, UnsupportedArchitectureError } from '../errors.js';

export const SUPPORTED_MODEL_TYPES = Object.freeze(['llama', 'mistral', 'qwen2', 'qwen3'] as const);
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export type RopeScaling =
  | null
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | { type: 'linear'; factor: number };

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** config `head_dim`, else hiddenSize / numHeads. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  tieWordEmbeddings: boolean;
  /**
   * Attention biases: always for qwen2 (q/k/v), never for mistral (its modules have none, whatever
   * the config says), `attention_bias` for llama and qwen3 (q/k/v/o). The adapter's `biased`
   * names the linears.
   */
  attentionBias: boolean;
  /** RMSNorm on q and k per head (qwen3). */
  qkNorm: boolean;
  vocabSize: number;
  maxPositionEmbeddings: number;
  hiddenAct: 'silu';
  /**
   * The narrowest sliding-window span any layer attends over (Transformers keeps key j for query
   * i when i - j < window), or null when every layer attends over the whole sequence. This
   * package computes full causal attention, so it runs such models only on sequences no longer
   * than the window, where the two agree (`checkSequenceFits`).
   */
  slidingWindow: number | null;
}

interface Defaults {
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  /** num_key_value_heads when the key is absent (null means num_attention_heads everywhere). */
  numKvHeads: number | 'heads';
  /** head_dim when the key is absent. */
  headDim: number | 'hidden/heads';
}

/** Transformers' defaults (the config classes' keyword defaults) for fields config.json may leave out. */
const DEFAULTS: Record<ModelType, Defaults> = {
  llama: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 2048, numKvHeads: 'heads', headDim: 'hidden/heads' },
  mistral: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 4096 * 32, numKvHeads: 8, headDim: 'hidden/heads' },
  qwen2: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768, numKvHeads: 32, headDim: 'hidden/heads' },
  qwen3: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768, numKvHeads: 32, headDim: 128 },
};
/** Mistral's and Qwen2/Qwen3's `sliding_window` when the key is absent. */
const DEFAULT_SLIDING_WINDOW = 4096;
/** Qwen2/Qwen3's `max_window_layers` when absent: layers from this index on use the window. */
const DEFAULT_MAX_WINDOW_LAYERS = 28;

class Fields {
  constructor(
    private readonly raw: Record<string, unknown>,
    readonly source: string,
  ) {}

  fail(field: string, expected: string, value: unknown): never {
    const got = value === undefined ? 'it is missing' : `got ${JSON.stringify(value)}`;
    throw new BadConfigError(`${this.source}: field '${field}': expected ${expected}, ${got}`);
  }

  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }

  /** Present in the file, null included (Transformers treats an explicit null unlike an absent key). */
  present(field: string): boolean {
    return this.raw[field] !== undefined;
  }

  int(field: string, opts: { min?: number; default?: number } = {}, obj = this.raw, prefix = ''): number {
    const v = obj[field];
    if ((v === undefined || v === null) && opts.default !== undefined) return opts.default;
    const min = opts.min ?? 1;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      this.fail(prefix + field, `an integer >= ${min}`, v);
    }
    return v;
  }

  positive(field: string, opts: { default?: number } = {}, obj = this.raw, prefix = ''): number {
    const v = obj[field];
    if ((v === undefined || v === null) && opts.default !== undefined) return opts.default;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(prefix + field, 'a positive number', v);
    return v;
  }

  bool(field: string, dflt: boolean): boolean {
    const v = this.raw[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(field, 'true or false', v);
    return v;
  }
}

export function parseModelConfig(raw: unknown, source: string): ModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new BadConfigError(`${source}: expected a JSON object`);
  }
  const obj = raw as Record<string, unknown>;
  const f = new Fields(obj, source);
  const modelType: unknown = obj.model_type;
  if (typeof modelType !== 'string') return f.fail('model_type', 'a string', modelType);
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new UnsupportedArchitectureError(
      `${source}: model_type '${modelType}' is not supported; supported architectures: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  }
  const type = modelType as ModelType;
  const d = DEFAULTS[type];

  const hiddenSize = f.int('hidden_size');
  const numHeads = f.int('num_attention_heads');
  // Absent: the class default; an explicit null: num_attention_heads ("for backward compatibility").
  const kvDefault = !f.present('num_key_value_heads') && d.numKvHeads !== 'heads' ? d.numKvHeads : numHeads;
  const numKvHeads = f.int('num_key_value_heads', { default: kvDefault });
  if (numHeads % numKvHeads !== 0) {
    f.fail('num_key_value_heads', `a divisor of num_attention_heads (${numHeads})`, numKvHeads);
  }
  let headDim: number;
  if (f.has('head_dim')) {
    headDim = f.int('head_dim');
  } else if (!f.present('head_dim') && d.headDim !== 'hidden/heads') {
    headDim = d.headDim;
  } else {
    if (hiddenSize % numHeads !== 0) {
      f.fail('head_dim', `present, since hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`, undefined);
    }
    headDim = hiddenSize / numHeads;
  }

  const act = obj.hidden_act ?? 'silu';
  // Transformers' ACT2FN maps both names to the same SiLU.
  if (act !== 'silu' && act !== 'swish') f.fail('hidden_act', "'silu' or 'swish' (the only activation these architectures use)", act);
  // Only Llama's MLP reads mlp_bias; the others build theirs without biases whatever it says.
  if (type === 'llama' && f.bool('mlp_bias', false)) f.fail('mlp_bias', 'false (MLP biases are not supported)', true);

  const attentionBias = type === 'qwen2' ? true : type === 'mistral' ? false : f.bool('attention_bias', false);

  const numLayers = f.int('num_hidden_layers');
  const rope = ropeParameters(obj, f, d.ropeTheta);

  return {
    modelType: type,
    hiddenSize,
    intermediateSize: f.int('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: f.positive('rms_norm_eps', { default: d.rmsNormEps }),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias,
    qkNorm: type === 'qwen3',
    vocabSize: f.int('vocab_size'),
    maxPositionEmbeddings: f.int('max_position_embeddings', { default: d.maxPositionEmbeddings }),
    hiddenAct: 'silu',
    slidingWindow: slidingWindow(type, obj, f, numLayers),
  };
}

/**
 * RoPE base and scaling. Transformers 5 writes them as `rope_parameters` ({rope_theta, rope_type,
 * factor, ...}); earlier versions as `rope_theta` plus `rope_scaling`. A value inside
 * rope_parameters wins over the top-level one, as in Transformers' conversion.
 */
function ropeParameters(obj: Record<string, unknown>, f: Fields, defaultTheta: number): { theta: number; scaling: RopeScaling } {
  const params = obj.rope_parameters;
  let scaling: RopeScaling;
  let theta: number;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) f.fail('rope_parameters', 'null or an object', params);
    const p = params as Record<string, unknown>;
    if (Object.values(p).some((v) => v !== null && typeof v === 'object' && !Array.isArray(v))) {
      throw new BadConfigError(
        `${f.source}: rope_parameters per layer type (${Object.keys(p).join(', ')}) are not supported: ` +
          'every layer must use the same RoPE',
      );
    }
    scaling = parseRopeScaling(p.rope_type === undefined && p.type === undefined ? { ...p, rope_type: 'default' } : p, f, 'rope_parameters');
    theta = p.rope_theta !== undefined && p.rope_theta !== null
      ? f.positive('rope_theta', {}, p, 'rope_parameters.')
      : f.positive('rope_theta', { default: defaultTheta });
    checkFullRotary(p.partial_rotary_factor, f, 'rope_parameters.partial_rotary_factor');
  } else {
    scaling = parseRopeScaling(obj.rope_scaling, f, 'rope_scaling');
    theta = f.positive('rope_theta', { default: defaultTheta });
  }
  checkFullRotary(obj.partial_rotary_factor, f, 'partial_rotary_factor');
  return { theta, scaling };
}

/** RoPE over part of each head: these architectures' Transformers code has no such path either. */
function checkFullRotary(v: unknown, f: Fields, field: string): void {
  if (v !== undefined && v !== null && v !== 1) f.fail(field, '1 (rotary embedding over the whole head)', v);
}

/**
 * The narrowest window of the layers that use sliding-window attention, as Transformers decides
 * it: Mistral applies `sliding_window` (default 4096; null turns it off) to every layer; Qwen2 and
 * Qwen3 only with `use_sliding_window`, on the layers `layer_types` marks "sliding_attention" or,
 * without layer_types, on layers from `max_window_layers` (default 28) on.
 */
function slidingWindow(type: ModelType, obj: Record<string, unknown>, f: Fields, numLayers: number): number | null {
  const window = (): number | null =>
    !f.present('sliding_window') ? DEFAULT_SLIDING_WINDOW : f.has('sliding_window') ? f.int('sliding_window') : null;
  if (type === 'llama') return null;
  if (type === 'mistral') return window();
  if (!f.bool('use_sliding_window', false)) return null;
  const w = window();
  if (w === null) return null;
  const layerTypes = obj.layer_types;
  if (layerTypes !== undefined && layerTypes !== null) {
    if (!Array.isArray(layerTypes)) f.fail('layer_types', 'a list of layer types', layerTypes);
    return layerTypes.includes('sliding_attention') ? w : null;
  }
  return numLayers > f.int('max_window_layers', { min: 0, default: DEFAULT_MAX_WINDOW_LAYERS }) ? w : null;
}

/**
 * Throws when `seqlen` is longer than the model's positions (`max_position_embeddings`: positions
 * it never saw in training, and attention cost growing as seqlen^2), or than a sliding window
 * some layer attends over: this package computes full causal attention, which agrees with the
 * windowed one only up to the window's length.
 */
export function checkSequenceFits(config: ModelConfig, seqlen: number, what: string): void {
  if (seqlen > config.maxPositionEmbeddings) {
    throw new InvalidArgumentError(
      `${what} ${seqlen} is longer than the model's max_position_embeddings (${config.maxPositionEmbeddings}): ` +
        `use a ${what} of at most ${config.maxPositionEmbeddings}`,
    );
  }
  if (config.slidingWindow !== null && seqlen > config.slidingWindow) {
    throw new InvalidArgumentError(
      `${what} ${seqlen} is longer than the model's sliding attention window (${config.slidingWindow} tokens); ` +
        `windowed attention is not implemented: use a ${what} of at most ${config.slidingWindow}`,
    );
  }
}

function parseRopeScaling(v: unknown, f: Fields, field: string): RopeScaling {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) f.fail(field, 'null or an object', v);
  const o = v as Record<string, unknown>;
  const prefix = `${field}.`;
  // Transformers renamed `type` to `rope_type`; both occur in the wild.
  const kind = o.rope_type ?? o.type;
  if (typeof kind !== 'string') f.fail(`${prefix}rope_type`, 'a string', kind);
  switch (kind) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: f.positive('factor', {}, o, prefix) };
    case 'llama3':
      return {
        type: 'llama3',
        factor: f.positive('factor', {}, o, prefix),
        lowFreqFactor: f.positive('low_freq_factor', {}, o, prefix),
        highFreqFactor: f.positive('high_freq_factor', {}, o, prefix),
        originalMaxPositionEmbeddings: f.int('original_max_position_embeddings', {}, o, prefix),
      };
    default:
      throw new BadConfigError(
        `${f.source}: ${field} type '${kind}' is not supported ` +
          "(supported: 'llama3', 'linear', or none)",
      );
  }
}
