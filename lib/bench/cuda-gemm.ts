/**
 * The CUDA int4 GEMM benchmark behind `awq bench cuda-gemm`, measured in this run on device 0:
 * the automatic int4 kernel (as `Int4Linear` with device 'cuda' calls it), this project's dense
 * fp16 tensor-core GEMM on the same shape (the baseline a W4A16 kernel has to beat), and the
 * device's copy bandwidth (the floor of a decode step, which streams its weights once).
 *
 * - Calls queue on a stream of the benchmark's own; decode-sized calls (m <= 16) are timed as
 *   streams of 20 back-to-back calls cycling through weight copies four times the size of the L2
 *   cache, so the weights come from memory as when decoding a model. Medians of the timings.
 * - `gbPerS` counts the bytes a call moves: the weights in the kernel's layout (int4 nibbles with
 *   their scales and zeros, or fp16 for the dense GEMM) plus x and y in fp16.
 * - These are kernel times on the device; `Int4Linear.forward` adds the host copies of x and y.
 */
import { backends, noCudaError } from '../backends.js';
import { CudaError, InvalidArgumentError } from '../errors.js';
import { native, withCudaBuildCommand } from '../native.js';
import { version } from '../version.js';

export type CudaGemmImpl = 'cuda-int4' | 'cuda-dense-fp16';

export interface CudaGemmBenchRecord {
  m: number;
  k: number;
  n: number;
  impl: CudaGemmImpl;
  medianMs: number;
  gbPerS: number;
  tflopPerS: number;
  /** gbPerS over the copy bandwidth measured in the same run. */
  shareOfCopyBandwidth: number;
}

export interface CudaGemmBenchResult {
  /** What ran: awq's version, Node's, the native binary, when (ISO 8601), timings per figure. */
  awqVersion: string;
  node: string;
  binary: string;
  timestamp: string;
  reps: number;
  device: string;
  computeCapability: string;
  /** Device-to-device copy, bytes read + written per second. */
  copyGBs: number;
  records: CudaGemmBenchRecord[];
}

export interface CudaGemmBenchOptions {
  ms?: number[];
  /** [k, n] pairs (k = in, n = out; k a multiple of 128, n of 8). */
  shapes?: Array<[number, number]>;
  /** Timings per measurement, 3 to 1000 (default 15; a third of them from m = 1024). */
  reps?: number;
  log?: (line: string) => void;
}

export const CUDA_DEFAULT_MS = [1, 16, 128, 4096];
// A 70B layer's shapes (issue 6's targets) and a 7B Llama's MLP.
export const CUDA_DEFAULT_SHAPES: Array<[number, number]> = [[8192, 8192], [8192, 28672], [4096, 11008], [11008, 4096]];

export async function benchCudaGemm(opts: CudaGemmBenchOptions = {}): Promise<CudaGemmBenchResult> {
  const reps = opts.reps ?? 15;
  // a median of fewer than 3 means little (and the native side wants 3)
  if (!Number.isInteger(reps) || reps < 3 || reps > 1000) throw new InvalidArgumentError(`reps: expected an integer from 3 to 1000, got ${reps}`);
  const b = backends();
  if (!b.cuda) throw noCudaError('awq bench cuda-gemm', b);
  const ms = opts.ms ?? CUDA_DEFAULT_MS;
  const shapes = opts.shapes ?? CUDA_DEFAULT_SHAPES;
  const log = opts.log ?? (() => {});
  if (typeof native().cudaBenchGemm !== 'function') {
    throw new CudaError(withCudaBuildCommand('awq bench cuda-gemm: the CUDA build predates this benchmark; rebuild it with `npm run build:cuda`'));
  }
  const dev = b.cuda.devices[0];
  const timestamp = new Date().toISOString();
  const copyGBs = await native().cudaBenchCopy();
  log(`${dev.name}: device-to-device copy ${copyGBs.toFixed(0)} GB/s (read + write)`);
  const records: CudaGemmBenchRecord[] = [];
  for (const [k, n] of shapes) {
    const r = await native().cudaBenchGemm(k, n, ms, reps);
    for (const row of r.rows) {
      const io = 2 * row.m * (k + n);
      const flops = 2 * row.m * k * n;
      for (const [impl, msPerCall, weightBytes] of [
        ['cuda-int4', row.int4Ms, r.int4WeightBytes],
        ['cuda-dense-fp16', row.denseMs, 2 * k * n],
      ] as const) {
        const gbPerS = (weightBytes + io) / (msPerCall * 1e-3) / 1e9;
        records.push({
          m: row.m, k, n, impl, medianMs: msPerCall, gbPerS, tflopPerS: flops / (msPerCall * 1e-3) / 1e12,
          shareOfCopyBandwidth: gbPerS / copyGBs,
        });
      }
      log(`${k}x${n} m=${row.m}: int4 ${row.int4Ms.toFixed(4)} ms, dense fp16 ${row.denseMs.toFixed(4)} ms`);
    }
  }
  return {
    awqVersion: version, node: process.versions.node, binary: b.binary, timestamp, reps,
    device: dev.name, computeCapability: dev.computeCapability, copyGBs, records,
  };
}

/** The table `awq bench cuda-gemm` prints. */
export function formatCudaTable(r: CudaGemmBenchResult): string {
  const lines = [
    `device: ${r.device} (compute capability ${r.computeCapability}); device-to-device copy ${r.copyGBs.toFixed(0)} GB/s (read + write)`,
    'GB/s = weight bytes (int4 with scales and zeros, or fp16) + x and y in fp16, over the time; medians; m <= 16: streams of 20 calls.',
    '',
    '| m | k x n | impl | median ms | GB/s | % of copy | TFLOP/s | dense / int4 time |',
    '|---:|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const x of r.records) {
    const dense = r.records.find((y) => y.impl === 'cuda-dense-fp16' && y.m === x.m && y.k === x.k && y.n === x.n);
    lines.push(
      `| ${x.m} | ${x.k} x ${x.n} | ${x.impl} | ${x.medianMs.toFixed(4)} | ${x.gbPerS.toFixed(0)} | ` +
        `${(100 * x.shareOfCopyBandwidth).toFixed(0)}% | ${x.tflopPerS.toFixed(1)} | ` +
        `${x.impl === 'cuda-int4' && dense ? `${(dense.medianMs / x.medianMs).toFixed(2)}x` : ''} |`,
    );
  }
  return lines.join('\n');
}
