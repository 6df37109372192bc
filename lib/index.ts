/** Public API of `awq`. */
export {
  AbortedError,
  AwqError,
  BadCheckpointError,
  BadConfigError,
  CudaError,
  InternalError,
  InvalidArgumentError,
  IoError,
  NativeLoadError,
  NonFiniteError,
  OutOfMemoryError,
  UnsupportedArchitectureError,
  type AwqErrorCode,
} from './errors.js';
export { backends, resolveBackend, setThreads, type Backends, type CudaDevice, type ResolvedBackend } from './backends.js';
export type { Isa } from './native.js';
export { activationStats } from './quantize/stats.js';
export { denseGemm, fmaPeakGflops, type DenseGemmOptions } from './gemm.js';
export { toFloat32, type HalfArray } from './half.js';
export { version } from './version.js';
export {
  DTYPE_SIZE,
  MAX_HEADER_BYTES,
  SafetensorsFile,
  SafetensorsWriter,
  isDtype,
  numel,
  type Dtype,
  type SafetensorsWriterOptions,
  type TensorInfo,
} from './checkpoint/safetensors.js';
export { checkOutputTarget, prepareOutputDir, type OutputDir, type PrepareOutputOptions } from './checkpoint/output-dir.js';
export { ModelFolder, WeightFiles, copyAuxiliaryFiles, readRawConfig } from './checkpoint/model-folder.js';
export {
  AwqCheckpoint,
  AwqCheckpointWriter,
  dequantizeAwq,
  openAwqCheckpoint,
  packAwq,
  parseAwqQuantization,
  readAwqQuantization,
  unpackAwq,
  type AwqDims,
  type AwqLinearTensors,
  type AwqPackInput,
  type AwqPacked,
  type AwqQuantization,
  type AwqUnpacked,
  type AwqWriterOptions,
} from './checkpoint/awq-format.js';
export {
  SUPPORTED_MODEL_TYPES,
  checkSequenceFits,
  parseModelConfig,
  type ModelConfig,
  type ModelType,
  type RopeScaling,
} from './models/config.js';
export { inspectCheckpoint, type InspectReport } from './cli/inspect.js';
export {
  buildCalibrationBlocks,
  calibrationTexts,
  loadCalibrationTexts,
  defaultCalibrationPath,
  type CalibrationSource,
  type CalibrationOptions,
  type CalibrationBlocks,
} from './calib/dataset.js';
export { loadTokenizer, type TextTokenizer } from './calib/tokenizer.js';
export type { ProgressEvent, ProgressListener } from './progress.js';
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
  type Precision,
  type QuantizedLayer,
  type QuantizedLinear,
  type QuantOptions,
} from './quantize/layer.js';
export { CudaHiddenStates } from './quantize/cuda-hidden.js';
export { quantize, type QuantizeOptions, type QuantizeResult, type QuantizationReport, type LayerSummary } from './quantize/pipeline.js';
export { keptProgress, resumeDirFor } from './quantize/resume.js';
export { evaluate, type EvaluateOptions, type EvaluateResult } from './eval/perplexity.js';
export { adapterFor, type ArchitectureAdapter } from './models/adapters.js';
export { ropeInvFreq } from './models/rope.js';
export { openModelWeights, loadLayerWeights, type ModelWeights } from './models/weights.js';
export {
  Int4Linear,
  type QuantizedLinearTensors,
  type Int4Input,
  type Int4Mode,
  type Int4ForwardOptions,
  type Int4BuildOptions,
  type Int4Device,
} from './gemm/int4-linear.js';
export { loadAwq, type LoadAwqOptions, type LoadedAwq, type LoadProgressEvent } from './gemm/load-awq.js';
