/** What this machine and build can run: CPU instruction set and threads, CUDA devices. */
import { native, nativeLoadNotes, nativePath, withCudaBuildCommand, type Isa } from './native.js';
import { CudaError, InvalidArgumentError } from './errors.js';
import type { Precision } from './quantize/layer.js';

export interface CudaDevice {
  index: number;
  name: string;
  computeCapability: string;
  memoryBytes: number;
}

export interface Backends {
  /** bf16Products: whether bf16 products run on bf16 instructions (AVX512-BF16, or BFDOT on arm64) here. */
  cpu: { isa: Isa; threads: number; cores: number; features: string[]; bf16Products: boolean };
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
      bf16Products: raw.cpu.bf16Products,
    },
    cuda: usable ? { devices: raw.cuda.devices } : null,
    cudaUnavailable: usable ? null : (nativeLoadNotes()[0] ?? withCudaBuildCommand(raw.cuda.reason ?? 'no CUDA device')),
    binary: nativePath(),
  };
}

/** The most threads the pool accepts (native/core/threadpool.h). */
export const MAX_THREADS = 1024;

/**
 * Sizes the shared native thread pool (one per process, for every call that runs afterwards); 0
 * restores the default (all available cores). Returns the size now in force.
 */
export function setThreads(threads: number): number {
  if (!Number.isInteger(threads) || threads < 0 || threads > MAX_THREADS) {
    throw new InvalidArgumentError(`threads: expected an integer from 0 to ${MAX_THREADS}, got ${threads}`);
  }
  return native().setThreads(threads);
}

/** The backend a quantization runs on, as resolved from the user's choice. */
export interface ResolvedBackend {
  backend: 'cpu' | 'cuda';
  /** The search's arithmetic: as asked ('fp16' only on CUDA). */
  precision: Precision;
  /** For reports: 'cpu (avx2, 2 threads)', 'cpu (avx512, 2 threads, bf16)' or 'cuda (NVIDIA H200, bf16)'. */
  description: string;
  /** Set when 'auto' fell back to the CPU (why CUDA was not used), or when bf16 runs without bf16 instructions. */
  note?: string;
}

/**
 * 'cuda' needs a CUDA build with a device (CudaError saying why not, and how to build one);
 * 'auto' takes CUDA when usable and otherwise the CPU, with a note. The CPU takes 'fp32' and
 * 'bf16' (noting when this CPU lacks AVX512-BF16, so bf16 gives its numbers at fp32 speed);
 * 'fp16' is CUDA only: asked with 'cpu' it is an error, and an 'auto' that falls back drops it
 * to 'fp32' (noted). Precision 'auto' is 'bf16' on a CPU with AVX512-BF16 (about 1.75x faster on
 * llama-22m, perplexity within 0.11% of the fp32 search at w4 and w3: README) and 'fp32' elsewhere
 * (where bf16 would not be faster, and on CUDA, whose fp32 search is the reference and fast).
 * `activity` names the work in the fallback note ('quantizing', 'evaluating').
 */
export function resolveBackend(requested: 'cpu' | 'cuda' | 'auto', precision: string = 'auto', activity = 'quantizing'): ResolvedBackend {
  if (requested !== 'cpu' && requested !== 'cuda' && requested !== 'auto') {
    throw new InvalidArgumentError(`backend: expected 'cpu', 'cuda' or 'auto', got ${String(requested)}`);
  }
  if (precision !== 'auto' && precision !== 'fp32' && precision !== 'bf16' && precision !== 'fp16') {
    throw new InvalidArgumentError(`precision: expected 'auto', 'fp32', 'bf16' or 'fp16', got ${String(precision)}`);
  }
  if (requested === 'cpu' && precision === 'fp16') {
    throw new InvalidArgumentError("precision: 'fp16' needs the CUDA backend (the CPU takes 'fp32' or 'bf16')");
  }
  const b = backends();
  const cpu = (notes: string[]): ResolvedBackend => {
    // 'auto' takes bf16 where its perplexities were compared with fp32 (AVX512-BF16, README "bf16
    // search on the CPU"); arm64's BFDOT rounds its sums differently and has not been compared on
    // hardware, so there it runs when asked for.
    const p: Precision = precision === 'bf16' || (precision === 'auto' && b.cpu.bf16Products && b.cpu.isa === 'avx512') ? 'bf16' : 'fp32';
    if (p === 'bf16' && !b.cpu.bf16Products) {
      notes.push('this CPU has no bf16 instructions (AVX512-BF16, arm64 BF16): bf16 products run on the fp32 kernels (bf16 results at fp32 speed)');
    }
    const threads = `${b.cpu.threads} thread${b.cpu.threads === 1 ? '' : 's'}`;
    return {
      backend: 'cpu',
      precision: p,
      description: `cpu (${b.cpu.isa}, ${threads}${p === 'bf16' ? ', bf16' : ''})`,
      ...(notes.length ? { note: notes.join('; ') } : {}),
    };
  };
  if (requested === 'cpu') return cpu([]);
  if (b.cuda) {
    const p: Precision = precision === 'auto' ? 'fp32' : precision;
    return { backend: 'cuda', precision: p, description: `cuda (${b.cuda.devices[0].name}, ${p})` };
  }
  const why = b.cudaUnavailable ?? 'no CUDA device';
  if (requested === 'cuda') throw noCudaError("backend 'cuda'", b, " Backend 'auto' falls back to the CPU.");
  const notes = [`CUDA not used (${why}); ${activity} on the CPU`];
  if (precision === 'fp16') notes.push("precision 'fp16' applies to CUDA only, the CPU search runs in fp32");
  return cpu(notes);
}

/**
 * The error of a CUDA feature asked for where no CUDA device is usable (`what`: who asked): why
 * none is. A binary built without CUDA says how to build one (with the command that works where
 * awq is installed); a CUDA build that found no device or driver says that instead.
 */
export function noCudaError(what: string, b: Backends = backends(), tail = ''): CudaError {
  return new CudaError(`${what}: ${b.cudaUnavailable ?? 'no CUDA device'}.${tail}`);
}
