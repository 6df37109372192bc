/**
 * Hugging Face `config.json` to a typed model description for the decoder-only architectures
 * this package handles. Fields the Transformers config classes give defaults for may be absent
 * (the same defaults apply); a present field of the wrong type, or an absent required one, is a
 * `BadConfigError` naming the field and the file.
 */
import { BadConfigError, UnsupportedArchitectureError } from '../errors.js';

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'] as const;
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
  /** Bias on q/k/v projections: always for qwen2, `attention_bias` for the others. */
  attentionBias: boolean;
  /** RMSNorm on q and k per head (qwen3). */
  qkNorm: boolean;
  vocabSize: number;
  maxPositionEmbeddings: number;
  hiddenAct: 'silu';
  /** Sliding-window attention span, null when attention is full. */
  slidingWindow?: number | null;
}

/** Transformers' defaults for the fields a config.json may leave out. */
const DEFAULTS: Record<ModelType, { rmsNormEps: number; ropeTheta: number; maxPositionEmbeddings: number }> = {
  llama: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 2048 },
  mistral: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 4096 * 32 },
  qwen2: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768 },
  qwen3: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768 },
};

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
  const numKvHeads = f.int('num_key_value_heads', { default: numHeads });
  if (numHeads % numKvHeads !== 0) {
    f.fail('num_key_value_heads', `a divisor of num_attention_heads (${numHeads})`, numKvHeads);
  }
  let headDim: number;
  if (f.has('head_dim')) {
    headDim = f.int('head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      f.fail('head_dim', `present, since hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`, undefined);
    }
    headDim = hiddenSize / numHeads;
  }

  const act = obj.hidden_act ?? 'silu';
  if (act !== 'silu') f.fail('hidden_act', "'silu' (the only activation these architectures use)", act);
  if (f.bool('mlp_bias', false)) f.fail('mlp_bias', 'false (MLP biases are not supported)', true);

  const attentionBias = type === 'qwen2' ? true : f.bool('attention_bias', false);

  let slidingWindow: number | null = null;
  if (type === 'mistral') {
    slidingWindow = f.has('sliding_window') ? f.int('sliding_window') : null;
  } else if (type === 'qwen2' || type === 'qwen3') {
    slidingWindow = f.bool('use_sliding_window', false) ? f.int('sliding_window') : null;
  }

  return {
    modelType: type,
    hiddenSize,
    intermediateSize: f.int('intermediate_size'),
    numLayers: f.int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: f.positive('rms_norm_eps', { default: d.rmsNormEps }),
    ropeTheta: f.positive('rope_theta', { default: d.ropeTheta }),
    ropeScaling: parseRopeScaling(obj.rope_scaling, f),
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias,
    qkNorm: type === 'qwen3',
    vocabSize: f.int('vocab_size'),
    maxPositionEmbeddings: f.int('max_position_embeddings', { default: d.maxPositionEmbeddings }),
    hiddenAct: 'silu',
    slidingWindow,
  };
}

function parseRopeScaling(v: unknown, f: Fields): RopeScaling {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) f.fail('rope_scaling', 'null or an object', v);
  const o = v as Record<string, unknown>;
  // Transformers renamed `type` to `rope_type`; both occur in the wild.
  const kind = o.rope_type ?? o.type;
  if (typeof kind !== 'string') f.fail('rope_scaling.rope_type', 'a string', kind);
  switch (kind) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: f.positive('factor', {}, o, 'rope_scaling.') };
    case 'llama3':
      return {
        type: 'llama3',
        factor: f.positive('factor', {}, o, 'rope_scaling.'),
        lowFreqFactor: f.positive('low_freq_factor', {}, o, 'rope_scaling.'),
        highFreqFactor: f.positive('high_freq_factor', {}, o, 'rope_scaling.'),
        originalMaxPositionEmbeddings: f.int('original_max_position_embeddings', {}, o, 'rope_scaling.'),
      };
    default:
      throw new BadConfigError(
        `${f.source}: rope_scaling type '${kind}' is not supported ` +
          "(supported: 'llama3', 'linear', or none)",
      );
  }
}
