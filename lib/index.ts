/** Public API of `awq`. */
export * from './errors.js';
export { backends, setThreads, type Backends, type CudaDevice } from './backends.js';
export { activationStats } from './quantize/stats.js';
export { version } from './version.js';
export {
  buildCalibrationBlocks,
  loadCalibrationTexts,
  defaultCalibrationPath,
  type CalibrationSource,
  type CalibrationOptions,
  type CalibrationBlocks,
} from './calib/dataset.js';
export { loadTokenizer, type TextTokenizer } from './calib/tokenizer.js';
export type { ProgressEvent, ProgressListener } from './progress.js';
