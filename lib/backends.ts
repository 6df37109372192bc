/** What this machine and build can run: CPU instruction set and threads, CUDA devices. */
import { native, nativeLoadNotes, nativePath, type Isa } from './native.js';
import { CudaError, InvalidArgumentError } from './errors.js';
import type { Precision } from './quantize/layer.js';

export interface CudaDevice {
  index: number;
  name: string;
  computeCapability: string;
  memoryBytes: number;
}

export interface Backends {
  cpu: { isa: Isa; threads: number; cores: number; features: string[] };
  /** null when no CUDA device is usable; `cudaUnavailable` then says why. */
  cuda: { devices: CudaDevice[] } | null;
  cudaUnavailable: string | null;
  /** The native binary in use. */
  binary: string;
}

export function backends(): Backends {
  const raw = native().backends();
  const usable = raw.cuda.devices.length > 0;
  return {
    cpu: {
      isa: raw.cpu.isa,
      threads: raw.cpu.threads,
      cores: raw.cpu.cores,
      features: raw.cpu.features ? raw.cpu.features.split(' ') : [],
    },
    cuda: usable ? { devices: raw.cuda.devices } : null,
    cudaUnavailable: usable ? null : (nativeLoadNotes()[0] ?? raw.cuda.reason),
    binary: nativePath(),
  };
}

/** Sizes the shared native thread pool; 0 restores the default (all available cores). */
/** The most threads the pool accepts (native/core/threadpool.h). */
export const MAX_THREADS = 1024;

export function setThreads(threads: number): number {
  if (!Number.isInteger(threads) || threads < 0 || threads > MAX_THREADS) {
    throw new InvalidArgumentError(`threads: expected an integer from 0 to ${MAX_THREADS}, got ${threads}`);
  }
  return native().setThreads(threads);
}

/** The backend a quantization runs on, as resolved from the user's choice. */
export interface ResolvedBackend {
  backend: 'cpu' | 'cuda';
  /** The search's arithmetic: as asked on CUDA, always 'fp32' on the CPU. */
  precision: Precision;
  /** For reports: 'cpu (avx2, 2 threads)' or 'cuda (NVIDIA H200, bf16)'. */
  description: string;
  /** Set when 'auto' fell back to the CPU: why CUDA was not used. */
  note?: string;
}

/**
 * 'cuda' needs a CUDA build with a device (CudaError saying why not, and how to build one);
 * 'auto' takes CUDA when usable and otherwise the CPU, with a note. A reduced precision is a
 * CUDA option: asked with 'cpu' it is an error, and an 'auto' that falls back drops it (noted).
 */
export function resolveBackend(requested: 'cpu' | 'cuda' | 'auto', precision: string = 'fp32'): ResolvedBackend {
  if (requested !== 'cpu' && requested !== 'cuda' && requested !== 'auto') {
    throw new InvalidArgumentError(`backend: expected 'cpu', 'cuda' or 'auto', got ${String(requested)}`);
  }
  if (precision !== 'fp32' && precision !== 'bf16' && precision !== 'fp16') {
    throw new InvalidArgumentError(`precision: expected 'fp32', 'bf16' or 'fp16', got ${String(precision)}`);
  }
  if (requested === 'cpu' && precision !== 'fp32') {
    throw new InvalidArgumentError(`precision: '${precision}' needs the CUDA backend (the CPU search runs in fp32)`);
  }
  const b = backends();
  const cpu = (): ResolvedBackend => ({
    backend: 'cpu',
    precision: 'fp32',
    description: `cpu (${b.cpu.isa}, ${b.cpu.threads} thread${b.cpu.threads === 1 ? '' : 's'})`,
  });
  if (requested === 'cpu') return cpu();
  if (b.cuda) {
    return { backend: 'cuda', precision, description: `cuda (${b.cuda.devices[0].name}, ${precision})` };
  }
  const why = b.cudaUnavailable ?? 'no CUDA device';
  if (requested === 'cuda') {
    throw new CudaError(
      `--backend cuda: ${why}. A CUDA build is made with \`npm run build:cuda\` (needs nvcc and an NVIDIA driver); ` +
        '--backend auto falls back to the CPU.',
    );
  }
  const dropped = precision === 'fp32' ? '' : `; precision '${precision}' applies to CUDA only, the CPU search runs in fp32`;
  return { ...cpu(), note: `CUDA not used (${why}); quantizing on the CPU${dropped}` };
}
