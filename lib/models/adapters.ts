/**
 * Architecture adapters: everything the pipeline needs to know about a model family, as data
 * (tensor names, which optional tensors exist, the per-layer architecture numbers). Llama,
 * Mistral, Qwen2 and Qwen3 share Hugging Face's Llama naming; they differ in attention biases
 * and per-head q/k RMSNorm (Qwen3), both read from the parsed config.
 */
import { UnsupportedArchitectureError } from '../errors.js';
import { LINEAR_NAMES, type LayerArch, type LinearName } from '../quantize/layer.js';
import type { ModelConfig } from './config.js';
import { ropeInvFreq } from './rope.js';

export { LINEAR_NAMES };

/** Module path of each linear inside a decoder layer. */
const LINEAR_MODULE: Record<LinearName, string> = {
  q_proj: 'self_attn.q_proj',
  k_proj: 'self_attn.k_proj',
  v_proj: 'self_attn.v_proj',
  o_proj: 'self_attn.o_proj',
  gate_proj: 'mlp.gate_proj',
  up_proj: 'mlp.up_proj',
  down_proj: 'mlp.down_proj',
};

export interface ArchitectureAdapter {
  readonly modelType: ModelConfig['modelType'];
  readonly numLayers: number;
  readonly embedTokens: string;
  readonly finalNorm: string;
  /** Tensor holding the output projection: `lm_head.weight`, or the embedding when tied. */
  readonly lmHead: string;
  /** Module prefix of linear `name` in layer `i`, e.g. `model.layers.3.self_attn.q_proj`. */
  linear(i: number, name: LinearName): string;
  /** `[out, in]` of linear `name`. */
  linearShape(name: LinearName): [number, number];
  inputNorm(i: number): string;
  postNorm(i: number): string;
  /** Per-head q/k RMSNorm weights (Qwen3), else undefined. */
  qNorm(i: number): string | undefined;
  kNorm(i: number): string | undefined;
  /**
   * Linears built with a bias, as Transformers builds them: Llama and Qwen3 q/k/v/o when
   * `attention_bias`, Qwen2 q/k/v always (o never), Mistral none. A stored bias elsewhere is not
   * read: Transformers drops it as an unexpected key and vLLM skips it, so using it would compute
   * another model than the one served.
   */
  readonly biased: ReadonlySet<LinearName>;
  /**
   * The bias tensor a loader reads for the linear at module `prefix`: `<prefix>.bias` for a
   * decoder linear in `biased` or a module outside the decoder's linears, else undefined.
   */
  biasOf(prefix: string): string | undefined;
  readonly layerArch: LayerArch;
}

export function adapterFor(config: ModelConfig): ArchitectureAdapter {
  if (!['llama', 'mistral', 'qwen2', 'qwen3'].includes(config.modelType)) {
    throw new UnsupportedArchitectureError(
      `model_type "${config.modelType}" is not supported; supported: llama, mistral, qwen2, qwen3`,
    );
  }
  const p = (i: number) => `model.layers.${i}`;
  const h = config.hiddenSize;
  const qOut = config.numHeads * config.headDim;
  const kvOut = config.numKvHeads * config.headDim;
  const shapes: Record<LinearName, [number, number]> = {
    q_proj: [qOut, h],
    k_proj: [kvOut, h],
    v_proj: [kvOut, h],
    o_proj: [h, qOut],
    gate_proj: [config.intermediateSize, h],
    up_proj: [config.intermediateSize, h],
    down_proj: [h, config.intermediateSize],
  };
  const biased = new Set<LinearName>(biasedLinears(config));
  const decoderLinears = new Map<string, LinearName>();
  for (let i = 0; i < config.numLayers; i++) for (const name of LINEAR_NAMES) decoderLinears.set(`${p(i)}.${LINEAR_MODULE[name]}`, name);
  return {
    modelType: config.modelType,
    numLayers: config.numLayers,
    embedTokens: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    lmHead: config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight',
    linear: (i, name) => `${p(i)}.${LINEAR_MODULE[name]}`,
    linearShape: (name) => shapes[name],
    inputNorm: (i) => `${p(i)}.input_layernorm.weight`,
    postNorm: (i) => `${p(i)}.post_attention_layernorm.weight`,
    qNorm: (i) => (config.qkNorm ? `${p(i)}.self_attn.q_norm.weight` : undefined),
    kNorm: (i) => (config.qkNorm ? `${p(i)}.self_attn.k_norm.weight` : undefined),
    biased,
    biasOf: (prefix) => {
      const name = decoderLinears.get(prefix);
      return name === undefined || biased.has(name) ? `${prefix}.bias` : undefined;
    },
    layerArch: {
      hiddenSize: h,
      intermediateSize: config.intermediateSize,
      numHeads: config.numHeads,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      rmsNormEps: config.rmsNormEps,
      ropeInvFreq: ropeInvFreq(config),
      qkNorm: config.qkNorm,
    },
  };
}

function biasedLinears(config: ModelConfig): LinearName[] {
  switch (config.modelType) {
    case 'qwen2':
      return ['q_proj', 'k_proj', 'v_proj'];
    case 'mistral':
      return [];
    default:
      return config.attentionBias ? ['q_proj', 'k_proj', 'v_proj', 'o_proj'] : [];
  }
}
