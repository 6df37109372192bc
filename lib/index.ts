/** Public API of `awq`. */
export * from './errors.js';
export { backends, setThreads, type Backends, type CudaDevice } from './backends.js';
export { activationStats } from './quantize/stats.js';
export { denseGemm, fmaPeakGflops, type DenseGemmOptions } from './gemm.js';
export { version } from './version.js';
