/** Public API of `awq`. */
export * from './errors.js';
export { backends, setThreads, type Backends, type CudaDevice } from './backends.js';
export { activationStats } from './quantize/stats.js';
export { version } from './version.js';
export {
  Int4Linear,
  type AwqLinearTensors,
  type QuantizedLinearTensors,
  type Int4Input,
  type Int4Mode,
  type Int4ForwardOptions,
} from './gemm/int4-linear.js';
