/**
 * The int4 GEMM benchmark behind `awq bench gemm`. Every number is measured in this process:
 * our kernels, the peer (ONNX Runtime MatMulNBits, when onnxruntime-node is installed) and the
 * physical floor (weight bytes over the streaming read bandwidth measured here), so ratios hold
 * on a noisy, shared machine.
 *
 * - `stream` cycles through enough distinct weight copies (>= streamMB in all) that every call
 *   reads its weights from DRAM, as decoding a real model does; `warm` reuses one copy. At most
 *   MAX_STREAM_COPIES copies: below streamMB / MAX_STREAM_COPIES bytes of weights a shape cycles
 *   through fewer bytes than asked (a note says so), and a small one may be read from the caches.
 * - `gbPerS` is the AutoAWQ weight bytes (qweight + qzeros + fp16 scales) over the time, for
 *   every impl, so the column compares like with like.
 */
import { cpus, totalmem } from 'node:os';

import { backends, setThreads } from '../backends.js';
import { InvalidArgumentError } from '../errors.js';
import { denseGemm, fmaPeakGflops } from '../gemm.js';
import type { HalfArray } from '../half.js';
import { Int4Linear, type Int4Mode } from '../gemm/int4-linear.js';
import { native, type StreamPool } from '../native.js';
import { loadOrt, matMulNBitsModel, ortMatMulNBits, toMatMulNBits, type Ort } from './onnx-matmulnbits.js';
import { throwIfAborted } from '../progress.js';
import { version } from '../version.js';

export type GemmImpl = 'awq' | 'awq-int8' | 'dense-fp32' | 'dense-fp16' | 'ort-acc0' | 'ort-acc4' | 'floor';
export const GEMM_IMPLS: GemmImpl[] = ['awq', 'awq-int8', 'dense-fp32', 'dense-fp16', 'ort-acc0', 'ort-acc4', 'floor'];

export interface GemmBenchRecord {
  m: number;
  k: number;
  n: number;
  threads: number;
  impl: GemmImpl;
  mode: 'stream' | 'warm';
  medianMs: number;
  /** The spread of the timed calls: fastest, quartiles, and how many there were. */
  minMs: number;
  p25Ms: number;
  p75Ms: number;
  calls: number;
  gbPerS: number;
  /** 2 m k n per second, GFLOP/s; null for the floor, which reads the weights' bytes and computes nothing. */
  gflopPerS: number | null;
}

export interface GemmBenchOptions {
  ms?: number[];
  /** [k, n] pairs (k = in, n = out). */
  shapes?: Array<[number, number]>;
  impls?: GemmImpl[];
  modes?: Array<'stream' | 'warm'>;
  threads?: number;
  /** Total bytes of distinct weight copies in stream mode. */
  streamMB?: number;
  /** Stops the run between timed rounds (an AbortedError). */
  signal?: AbortSignal;
  /** Minimum timed calls and time per measurement. */
  minCalls?: number;
  minSeconds?: number;
  group?: number;
  log?: (line: string) => void;
}

/** What stream mode cycled through for one shape. */
export interface GemmBenchShape {
  k: number;
  n: number;
  /** AutoAWQ bytes of one weight copy (qweight + qzeros + fp16 scales): the bytes in `gbPerS`. */
  weightBytes: number;
  /** Distinct weight copies in stream mode (1 when stream mode was not asked). */
  streamCopies: number;
  /** True when MAX_STREAM_COPIES held streamCopies * weightBytes below streamMB. */
  streamCapped: boolean;
}

/**
 * What `awq bench gemm --json` prints (README, "awq bench gemm --json"). Key order is the
 * printed order.
 */
export interface GemmBenchResult {
  /** What ran: awq's version, Node's, the native binary, and when (ISO 8601). */
  awqVersion: string;
  node: string;
  binary: string;
  timestamp: string;
  /** The measurement settings (a --quick run is told apart by them). */
  settings: { minCalls: number; minSeconds: number; group: number; modes: Array<'stream' | 'warm'> };
  /** One line: CPU model, cores available, kernel ISA and CPU features. */
  machine: string;
  cpu: { model: string; cores: number; features: string[] };
  /** The int4 kernels' instruction set ('avx512', 'avx2', 'portable', ...). */
  isa: string;
  threads: number;
  /** Streaming read bandwidth measured in this run, GB/s (1e9 bytes per second). */
  bandwidthGBs: number;
  /** Measured fp32 FMA throughput of this machine on `threads` threads, GFLOP/s. */
  fmaPeakGflops: number;
  /** The peer: the onnxruntime-node version, or why the ort-* impls did not run. */
  ort: { version: string } | { skipped: string };
  /** Asked total size of the distinct weight copies in stream mode, MB (1e6 bytes). */
  streamMB: number;
  shapes: GemmBenchShape[];
  /** Checks made along the way (ORT vs awq agreement, skipped impls, capped copies). */
  notes: string[];
  records: GemmBenchRecord[];
}

export const DEFAULT_MS = [1, 4, 16, 128, 512];
export const DEFAULT_SHAPES: Array<[number, number]> = [[4096, 4096], [4096, 11008], [11008, 4096]];
export const DEFAULT_STREAM_MB = 400;
/** Largest m (rows of x) the benchmark takes. */
export const MAX_M = 65536;
/**
 * Most distinct weight copies stream mode cycles through, per impl. Every copy is built and
 * touched before timing, and each ort-* copy is a session with a thread pool of its own, so a
 * small shape (532 bytes at 128x8) would otherwise ask for hundreds of thousands of them.
 */
export const MAX_STREAM_COPIES = 128;
/** Longest typed array the benchmark allocates (elements; V8's limit in Node 20). */
const MAX_ARRAY_LENGTH = 2 ** 32 - 1;
/** The streaming read probe's buffer (measureReadBandwidth). */
const PROBE_MB = 512;

/** Streaming read bandwidth in GB/s: median of reads of a buffer much larger than any cache. */
export function measureReadBandwidth(mb = PROBE_MB, reps = 5): number {
  const bytes = mb * 2 ** 20;
  const pool = native().benchStreamPool(bytes);
  native().benchStreamRead(pool, 0, bytes);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    native().benchStreamRead(pool, 0, bytes);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return bytes / median(times) / 1e9;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Small fast PRNG (xorshift32) for benchmark data. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

interface Runner {
  impl: GemmImpl;
  /** Distinct weight copies the runner cycles through (1 in warm mode). */
  copies: number;
  run: (copy: number) => unknown;
}

/**
 * Blocks this thread for `ms` without occupying a core, so that pool threads that spin after a
 * call (ours, for 200 us) go idle before the next impl is timed. ONNX Runtime's spinning is off
 * (ortMatMulNBits): each of its sessions, one per weight copy, has its own pool, and dozens of
 * spinning pools would take the cores from every call.
 */
function sleepQuietly(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
const QUIET_MS = 1;

/**
 * Times the runners round-robin (one timed call each per round) so that load from other
 * processes on a shared machine hits every impl alike; returns the median ms of each. Each timed
 * call is the second of a back-to-back pair of the same impl, after a quiet pause: as in a decode
 * loop, where one layer's call follows another's, every impl runs with its thread pool as that
 * loop leaves it, and no impl's spinning threads overlap another's call.
 * Within a round the runners start at copies spread over the pool: impls that share weight
 * copies (awq and awq-int8) would otherwise read, one after the other, the copy the previous one
 * just pulled into the last-level cache; the untimed first call of a pair reads yet another copy.
 */
async function timeInterleaved(runners: Runner[], minCalls: number, minSeconds: number, signal?: AbortSignal): Promise<CallStats[]> {
  for (const r of runners) for (let c = 0; c < r.copies; c++) await r.run(c); // warm-up: touch every copy
  throwIfAborted(signal);
  const times: number[][] = runners.map(() => []);
  const start = process.hrtime.bigint();
  for (let round = 0; round < 2000; round++) {
    throwIfAborted(signal);
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if (round >= minCalls && elapsed >= minSeconds * runners.length) break;
    for (let j = 0; j < runners.length; j++) {
      const { copies } = runners[j];
      const copy = (round + j * Math.floor(copies / runners.length)) % copies;
      sleepQuietly(QUIET_MS);
      await runners[j].run((copy + Math.floor(copies / 2)) % copies);
      const t0 = process.hrtime.bigint();
      await runners[j].run(copy);
      times[j].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  return times.map(callStats);
}

/** The timed calls of one runner: the median and what says how far to trust it. */
interface CallStats {
  medianMs: number;
  minMs: number;
  p25Ms: number;
  p75Ms: number;
  calls: number;
}

function callStats(times: number[]): CallStats {
  const sorted = [...times].sort((a, b) => a - b);
  // nearest-rank quartiles: values that were measured
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return { medianMs: median(times), minMs: sorted[0], p25Ms: at(0.25), p75Ms: at(0.75), calls: times.length };
}

/** AutoAWQ bytes of a k x n weight: int4 qweight and qzeros, fp16 scales. */
function awqWeightBytes(k: number, n: number, group: number): number {
  const groups = k / group;
  return (k * n) / 2 + (groups * n) / 2 + groups * n * 2;
}

/** Distinct copies of `bytesPerCopy` that make up `streamBytes`, at most MAX_STREAM_COPIES. */
function copiesFor(streamBytes: number, bytesPerCopy: number): { copies: number; capped: boolean } {
  const wanted = Math.max(1, Math.ceil(streamBytes / bytesPerCopy));
  return { copies: Math.min(wanted, MAX_STREAM_COPIES), capped: wanted > MAX_STREAM_COPIES };
}

const gb = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

/** The memory the process may use: RAM, or the cgroup's limit where that is lower. */
function memoryLimit(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  return constrained && constrained > 0 && Number.isFinite(constrained) ? Math.min(constrained, totalmem()) : totalmem();
}

/**
 * Checks a run's options before anything is measured: sizes the typed arrays can hold, a floor
 * alone with nothing to time, and a rough estimate of the peak memory (weights and copies of one
 * shape, x and y of its largest m, the bandwidth probe) against this machine's.
 */
function checkGemmBench(o: {
  ms: number[]; shapes: Array<[number, number]>; impls: GemmImpl[]; modes: Array<'stream' | 'warm'>;
  streamBytes: number; group: number;
}): void {
  const { ms, shapes, impls, modes, streamBytes, group } = o;
  if (!ms.length || !shapes.length || !impls.length || !modes.length) {
    throw new InvalidArgumentError('bench gemm: ms, shapes, impls and modes must not be empty');
  }
  for (const m of ms) {
    if (!Number.isSafeInteger(m) || m < 1 || m > MAX_M) throw new InvalidArgumentError(`bench gemm: m must be an integer from 1 to ${MAX_M}, got ${m}`);
  }
  if (!(streamBytes > 0) || !Number.isFinite(streamBytes)) throw new InvalidArgumentError(`bench gemm: streamMB must be positive, got ${streamBytes / 1e6}`);
  if (impls.every((i) => i === 'floor') && !(ms.includes(1) && modes.includes('stream'))) {
    throw new InvalidArgumentError(`bench gemm: nothing to time: the floor runs only at m = 1 in stream mode (m = ${ms.join(',')})`);
  }
  const maxM = Math.max(...ms);
  const ortLevels = impls.filter((i) => i.startsWith('ort-')).length;
  let peak = 0, peakAt = '';
  for (const [k, n] of shapes) {
    if (!Number.isSafeInteger(k) || !Number.isSafeInteger(n) || k < group || n < 8 || k % group || n % 8) {
      throw new InvalidArgumentError(`bench gemm: shape ${k}x${n}: k must be a multiple of ${group} and n of 8`);
    }
    for (const [what, len] of [['k x n', k * n], ['m x k', maxM * k], ['m x n', maxM * n]] as const) {
      if (len > MAX_ARRAY_LENGTH) {
        throw new InvalidArgumentError(
          `bench gemm: shape ${k}x${n} at m = ${maxM}: ${what} = ${len} elements, more than one array holds (${MAX_ARRAY_LENGTH})`,
        );
      }
    }
    const weightBytes = awqWeightBytes(k, n, group);
    const copies = modes.includes('stream') ? copiesFor(streamBytes, weightBytes).copies : 1;
    const denseCopies = modes.includes('stream') ? copiesFor(streamBytes, 4 * k * n).copies : 1;
    const halfCopies = modes.includes('stream') ? copiesFor(streamBytes, 2 * k * n).copies : 1;
    const weights =
      k * n + // the int4 values
      copies * weightBytes + // the packed layers
      (impls.includes('floor') ? copies * weightBytes : 0) +
      (impls.includes('dense-fp32') ? (denseCopies + 1) * 4 * k * n : 0) +
      (impls.includes('dense-fp16') ? halfCopies * 2 * k * n + 4 * k * n : 0) +
      ortLevels * copies * 2 * weightBytes; // each session's initializer and its packed weights
    // x in fp32, packed for the exact path and in int8; y, and ORT's own y
    const rows = maxM * (9 * k + 4 * n) + (ortLevels ? 8 * maxM * n : 0);
    const bytes = PROBE_MB * 2 ** 20 + weights + rows;
    if (bytes > peak) (peak = bytes), (peakAt = `shape ${k}x${n} at m = ${maxM}`);
  }
  const limit = memoryLimit();
  if (peak > limit) {
    throw new InvalidArgumentError(
      `bench gemm: ${peakAt} needs about ${gb(peak)} of memory (weights, their stream copies, x and y), more than this machine's ${gb(limit)}`,
    );
  }
}

export async function benchGemm(options: GemmBenchOptions = {}): Promise<GemmBenchResult> {
  const log = options.log ?? (() => {});
  // the pool's size: all cores, or AWQ_THREADS where set
  const threads = options.threads ?? backends().cpu.threads;
  const ms = options.ms ?? DEFAULT_MS;
  const shapes = options.shapes ?? DEFAULT_SHAPES;
  const impls = options.impls ?? GEMM_IMPLS;
  const modes = options.modes ?? ['stream', 'warm'];
  const streamMB = options.streamMB ?? DEFAULT_STREAM_MB;
  const streamBytes = streamMB * 1e6;
  const minCalls = options.minCalls ?? 7;
  const minSeconds = options.minSeconds ?? 0.5;
  const group = options.group ?? 128;
  const notes: string[] = [];
  checkGemmBench({ ms, shapes, impls, modes, streamBytes, group });
  setThreads(threads);
  if (impls.includes('floor') && !(ms.includes(1) && modes.includes('stream'))) {
    notes.push('floor not timed: it runs only at m = 1 in stream mode');
  }

  const timestamp = new Date().toISOString();
  const b = backends();
  const cpuModel = cpus()[0]?.model?.trim() || 'unknown CPU';
  const machine = `${cpuModel}, ${b.cpu.cores} cores available, ${b.cpu.isa} kernels (${b.cpu.features.join(' ')})`;
  log(`machine: ${machine}; ${threads} threads`);
  const bandwidthGBs = measureReadBandwidth();
  log(`streaming read bandwidth: ${bandwidthGBs.toFixed(1)} GB/s`);
  const peak = await fmaPeakGflops();
  log(`fp32 FMA peak: ${peak.toFixed(1)} GFLOP/s`);

  const wantsOrt = impls.some((i) => i.startsWith('ort-'));
  const ortOrWhy: Ort | string = wantsOrt ? await loadOrt() : 'not requested';
  const ort = typeof ortOrWhy === 'string' ? null : ortOrWhy;
  if (wantsOrt && !ort) notes.push(`ort-* skipped: ${ortOrWhy as string}`);
  if (impls.every((i) => (i.startsWith('ort-') && !ort) || (i === 'floor' && !(ms.includes(1) && modes.includes('stream'))))) {
    // Every impl asked for is unavailable here: an error before building weights, not an empty result.
    throw new InvalidArgumentError(`bench gemm: nothing to time (${notes.join('; ')})`);
  }

  const records: GemmBenchRecord[] = [];
  const shapeInfo: GemmBenchShape[] = [];
  for (const [k, n] of shapes) {
    const groups = k / group;
    const awqBytes = awqWeightBytes(k, n, group);
    const stream = modes.includes('stream');
    const { copies, capped } = stream ? copiesFor(streamBytes, awqBytes) : { copies: 1, capped: false };
    shapeInfo.push({ k, n, weightBytes: awqBytes, streamCopies: copies, streamCapped: capped });
    log(`shape k=${k} n=${n}: ${(awqBytes / 1e6).toFixed(3)} MB of AWQ weights, ${copies} copies for stream mode${capped ? ' (capped)' : ''}`);
    if (capped) {
      const note =
        `k=${k} n=${n}: stream mode capped at ${MAX_STREAM_COPIES} weight copies, ${((copies * awqBytes) / 1e6).toFixed(3)} MB in all ` +
        `instead of ${streamMB} MB: the weights may come from the caches rather than DRAM`;
      notes.push(note);
      log(`  ${note}`);
    }

    // Random weights with fp16-representable scales, the same for every impl.
    const rand = rng(k * 31 + n);
    const q = new Uint8Array(n * k);
    for (let i = 0; i < q.length; i++) q[i] = (rand() * 16) | 0;
    const zeros = new Uint8Array(n * groups).map(() => (rand() * 16) | 0);
    const scales = new Float32Array(n * groups).map(() => Math.fround(2 ** -10 * (1 + ((rand() * 1024) | 0) / 1024)));
    const layers: Int4Linear[] = [];
    for (let c = 0; c < copies; c++) layers.push(await Int4Linear.fromQuantized({ q, zeros, scales, inFeatures: k, outFeatures: n, groupSize: group }));

    // Allocated natively, as the weights are, so that both read the same kind of pages.
    let floorPool: StreamPool | null = null;
    if (impls.includes('floor') && modes.includes('stream') && ms.includes(1)) floorPool = native().benchStreamPool(copies * awqBytes);
    // dense-fp32: the project's sgemm on dequantize(W), fp32 copies (8x the bytes) for stream mode.
    const w = impls.includes('dense-fp32') || impls.includes('dense-fp16') ? layers[0].dequantize() : null;
    const dense: Float32Array[] = [];
    if (impls.includes('dense-fp32') && w) {
      const denseCopies = stream ? copiesFor(streamBytes, w.length * 4).copies : 1;
      dense.push(w);
      for (let c = 1; c < denseCopies; c++) dense.push(w.slice());
    }
    // dense-fp16: the same product on dequantize(W) stored as fp16 (4x the int4 bytes), which
    // denseGemm widens as it reads: what serving the unquantized fp16 model would stream.
    const half: HalfArray[] = [];
    if (impls.includes('dense-fp16') && w) {
      const bits = new Uint16Array(w.length);
      await native().convertFromF32(w, 'F16', bits);
      const halfCopies = stream ? copiesFor(streamBytes, bits.length * 2).copies : 1;
      half.push({ data: bits, dtype: 'fp16' });
      for (let c = 1; c < halfCopies; c++) half.push({ data: bits.slice(), dtype: 'fp16' });
    }
    const ortSessions = new Map<number, Array<Awaited<ReturnType<typeof ortMatMulNBits>>>>();
    if (ort) {
      const w = toMatMulNBits(q, zeros, scales, n, k, group);
      for (const level of [0, 4]) {
        if (!impls.includes(`ort-acc${level}` as GemmImpl)) continue;
        const model = matMulNBitsModel(w, n, k, group, level);
        const list = [];
        for (let c = 0; c < copies; c++) list.push(await ortMatMulNBits(ort, model, threads));
        ortSessions.set(level, list);
      }
    }

    for (const m of ms) {
      const x = new Float32Array(m * k).map(() => rand() * 2 - 1);
      const out = new Float32Array(m * n);
      // Same semantics check: ONNX Runtime exact vs ours, once per shape and m.
      const acc0 = ortSessions.get(0);
      if (acc0) {
        const yo = await acc0[0].run(x, m, k);
        const ya = layers[0].forwardSync(x, m);
        let worst = 0, scale = 0;
        for (let i = 0; i < ya.length; i++) (worst = Math.max(worst, Math.abs(ya[i] - yo[i]))), (scale = Math.max(scale, Math.abs(ya[i])));
        notes.push(`k=${k} n=${n} m=${m}: max |awq - ort-acc0| = ${(worst / scale).toExponential(1)} of max |y|`);
      }
      for (const mode of modes) {
        const calls = mode === 'stream' ? copies : 1;
        const runners: Runner[] = [];
        for (const impl of impls) {
          if (impl === 'awq' || impl === 'awq-int8') {
            const opts = { mode: (impl === 'awq' ? 'exact' : 'int8') as Int4Mode, out };
            runners.push({ impl, copies: calls, run: (c) => layers[c].forwardSync(x, m, opts) });
          } else if (impl === 'dense-fp32' && dense.length) {
            const copiesHere = mode === 'stream' ? dense.length : 1;
            runners.push({ impl, copies: copiesHere, run: (c) => denseGemm({ a: x, b: dense[c], m, n, k, transB: true, c: out }) });
          } else if (impl === 'dense-fp16' && half.length) {
            const copiesHere = mode === 'stream' ? half.length : 1;
            runners.push({ impl, copies: copiesHere, run: (c) => denseGemm({ a: x, b: half[c], m, n, k, transB: true, c: out }) });
          } else if (impl === 'ort-acc0' || impl === 'ort-acc4') {
            const list = ortSessions.get(impl === 'ort-acc0' ? 0 : 4);
            if (list) runners.push({ impl, copies: calls, run: (c) => list[c].run(x, m, k) });
          } else if (impl === 'floor' && m === 1 && mode === 'stream' && floorPool) {
            // The floor: reading as many bytes as the weights, from a pool larger than the caches.
            const pool = floorPool;
            runners.push({ impl, copies: calls, run: (c) => native().benchStreamRead(pool, c * awqBytes, awqBytes) });
          }
        }
        const stats = await timeInterleaved(runners, minCalls, minSeconds, options.signal);
        runners.forEach((r, j) => {
          const { medianMs } = stats[j];
          const rec: GemmBenchRecord = {
            m, k, n, threads, impl: r.impl, mode, ...stats[j],
            gbPerS: awqBytes / (medianMs / 1e3) / 1e9,
            gflopPerS: r.impl === 'floor' ? null : (2 * m * k * n) / (medianMs / 1e3) / 1e9,
          };
          records.push(rec);
          const gflop = rec.gflopPerS === null ? '' : `, ${rec.gflopPerS.toFixed(1)} GFLOP/s`;
          log(`  m=${m} ${mode} ${r.impl}: ${medianMs.toFixed(3)} ms, ${rec.gbPerS.toFixed(1)} GB/s${gflop}`);
        });
      }
    }
    for (const list of ortSessions.values()) for (const s of list) await s.release();
    layers.length = 0;
    dense.length = 0;
    floorPool = null;
  }
  throwIfAborted(options.signal); // a signal after the last round: no result that looks complete
  return {
    awqVersion: version,
    node: process.versions.node,
    binary: b.binary,
    timestamp,
    settings: { minCalls, minSeconds, group, modes },
    machine,
    cpu: { model: cpuModel, cores: b.cpu.cores, features: [...b.cpu.features] },
    isa: b.cpu.isa,
    threads,
    bandwidthGBs,
    fmaPeakGflops: peak,
    ort: ort ? { version: ort.version } : { skipped: ortOrWhy as string },
    streamMB,
    shapes: shapeInfo,
    notes,
    records,
  };
}
