/** Public API of `awq`. */
export * from './errors.js';
export { backends, setThreads, type Backends, type CudaDevice } from './backends.js';
export { activationStats } from './quantize/stats.js';
export { version } from './version.js';
export {
  decoderLayerForward,
  lmHeadNll,
  pseudoQuantize,
  quantizeDecoderLayer,
  LINEAR_NAMES,
  type ClipReport,
  type GroupReport,
  type LayerArch,
  type LayerPhase,
  type LayerReport,
  type LayerWeights,
  type LinearName,
  type QuantizedLayer,
  type QuantizedLinear,
  type QuantOptions,
} from './quantize/layer.js';
