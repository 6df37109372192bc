/** What this machine and build can run: CPU instruction set and threads, CUDA devices. */
import { native, nativeLoadNotes, nativePath, type Isa } from './native.js';
import { InvalidArgumentError } from './errors.js';

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
export function setThreads(threads: number): number {
  if (!Number.isInteger(threads) || threads < 0) {
    throw new InvalidArgumentError(`threads: expected an integer >= 0, got ${threads}`);
  }
  return native().setThreads(threads);
}
