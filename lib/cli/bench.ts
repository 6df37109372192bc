/**
 * `awq bench gemm`: int4 GEMM timings on the CPU against ONNX Runtime and the memory-bandwidth
 * floor. `awq bench cuda-gemm`: the CUDA int4 GEMM against the dense fp16 GEMM and the copy
 * bandwidth of the device.
 */
import { InvalidArgumentError as UsageError, type Command } from 'commander';

import { MAX_THREADS } from '../backends.js';
import { benchCudaGemm, CUDA_DEFAULT_MS, CUDA_DEFAULT_SHAPES, formatCudaTable } from '../bench/cuda-gemm.js';
import {
  benchGemm, DEFAULT_MS, DEFAULT_SHAPES, DEFAULT_STREAM_MB, GEMM_IMPLS, MAX_M,
  type GemmBenchRecord, type GemmBenchResult, type GemmImpl,
} from '../bench/gemm.js';
import { InvalidArgumentError } from '../errors.js';
import { positiveDecimal, positiveDecimalList } from './parse.js';
import { abortOnSignals } from './progress-view.js';

interface GemmCliOptions {
  json?: boolean;
  quick?: boolean;
  threads?: number;
  m?: number[];
  shapes?: Array<[number, number]>;
  impl?: GemmImpl[];
  streamMb?: number;
}

/** `--shapes`: `<in>x<out>` pairs separated by commas, in as a multiple of 128 and out of 8. */
function shapeList(value: string): Array<[number, number]> {
  const expects = 'KxN pairs separated by commas (K a multiple of 128, N of 8)';
  if (value === '') throw new UsageError(`--shapes expects ${expects}, got an empty value`);
  return value.split(',').map((s) => {
    const match = /^([0-9]+)x([0-9]+)$/.exec(s);
    const [k, n] = match ? [Number(match[1]), Number(match[2])] : [NaN, NaN];
    if (!match || !Number.isSafeInteger(k) || !Number.isSafeInteger(n) || k < 128 || n < 8 || k % 128 || n % 8) {
      throw new UsageError(`--shapes expects ${expects}, got ${s === '' ? `an empty item in "${value}"` : `"${s}"`}`);
    }
    return [k, n] as [number, number];
  });
}

function implList(value: string): GemmImpl[] {
  const impls = value.split(',');
  for (const [i, s] of impls.entries()) {
    if (!GEMM_IMPLS.includes(s as GemmImpl)) {
      throw new UsageError(`--impl expects some of ${GEMM_IMPLS.join(',')}, got ${value === '' ? 'an empty value' : `"${s}"`}`);
    }
    if (impls.indexOf(s) !== i) throw new UsageError(`--impl names ${s} twice`);
  }
  return impls as GemmImpl[];
}

const shapeText = (shapes: Array<[number, number]>) => shapes.map(([k, n]) => `${k}x${n}`).join(',');

/**
 * Where the benchmark's progress lines go (stderr, so stdout carries only the result): text, or
 * under --json one JSON line each, `{"event":"log","message":...,"elapsedMs":...}`, as the other
 * commands' progress events are.
 */
function logTo(json: boolean | undefined): (line: string) => void {
  const start = performance.now();
  return json
    ? (line) => process.stderr.write(`${JSON.stringify({ event: 'log', message: line.trim(), elapsedMs: Math.round(performance.now() - start) })}\n`)
    : (line) => process.stderr.write(`${line}\n`);
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks that measure their own baselines in the same run');
  bench
    .command('gemm')
    .description('int4 GEMM (exact and int8 modes) vs ONNX Runtime MatMulNBits and the DRAM floor, stream and warm')
    .option('--json', 'print a JSON object {awqVersion, node, binary, timestamp, settings, machine, cpu, isa, threads, bandwidthGBs, fmaPeakGflops, ort, streamMB, shapes, notes, records} (log lines as JSON lines on stderr)')
    .option('--quick', 'a short run: shape 4096x11008, m = 1 and 128, fewer calls')
    .option('--threads <n>', 'threads for every impl (default: AWQ_THREADS, else all available cores)', positiveDecimal('--threads', MAX_THREADS))
    .option('--m <list>', `rows of x, at most ${MAX_M} (default ${DEFAULT_MS.join(',')})`, positiveDecimalList('--m', MAX_M))
    .option('--shapes <list>', `KxN pairs, in x out (default ${shapeText(DEFAULT_SHAPES)})`, shapeList)
    .option('--impl <list>', `subset of ${GEMM_IMPLS.join(',')}`, implList)
    .option('--stream-mb <mb>', `total size of the distinct weight copies in stream mode (default ${DEFAULT_STREAM_MB})`, positiveDecimal('--stream-mb'))
    .action(async (opts: GemmCliOptions) => {
      const quick = opts.quick === true;
      const ms = opts.m ?? (quick ? [1, 128] : DEFAULT_MS);
      if (opts.impl?.every((i) => i === 'floor') && !ms.includes(1)) {
        throw new InvalidArgumentError(`--impl floor: the floor runs only at m = 1 (stream mode), and --m ${ms.join(',')} has no 1: nothing to time`);
      }
      const controller = new AbortController();
      const release = abortOnSignals(controller, { json: opts.json });
      const result = await benchGemm({
        signal: controller.signal,
        threads: opts.threads,
        ms,
        shapes: opts.shapes ?? (quick ? [[4096, 11008]] : undefined),
        impls: opts.impl,
        streamMB: opts.streamMb,
        minCalls: quick ? 3 : 7,
        minSeconds: quick ? 0.15 : 0.5,
        log: logTo(opts.json),
      }).finally(release);
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 1)}\n` : `${formatTable(result.records, result)}\n`);
    });
  bench
    .command('cuda-gemm')
    .description('CUDA int4 GEMM vs the dense fp16 GEMM and the device copy bandwidth (device 0)')
    .option('--json', 'print a JSON object {awqVersion, node, binary, timestamp, reps, device, computeCapability, copyGBs, records: [{m, k, n, impl, medianMs, gbPerS, tflopPerS, shareOfCopyBandwidth}]} (log lines as JSON lines on stderr)')
    .option('--quick', 'a short run: shape 4096x11008, m = 1 and 16, fewer timings')
    .option('--m <list>', `rows of x, at most ${MAX_M} (default ${CUDA_DEFAULT_MS.join(',')})`, positiveDecimalList('--m', MAX_M))
    .option('--shapes <list>', `KxN pairs, in x out (default ${shapeText(CUDA_DEFAULT_SHAPES)})`, shapeList)
    .option('--reps <n>', 'timings per measurement, each a median (default 15, from 3 to 1000)', positiveDecimal('--reps', 1000, 3))
    .action(async (opts: { json?: boolean; quick?: boolean; m?: number[]; shapes?: Array<[number, number]>; reps?: number }) => {
      const quick = opts.quick === true;
      const result = await benchCudaGemm({
        ms: opts.m ?? (quick ? [1, 16] : undefined),
        shapes: opts.shapes ?? (quick ? [[4096, 11008]] : undefined),
        reps: opts.reps ?? (quick ? 5 : undefined),
        log: logTo(opts.json),
      });
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 1)}\n` : `${formatCudaTable(result)}\n`);
    });
}

/** The peer column's source, as the table's header names it. */
function ortText(ort: GemmBenchResult['ort']): string {
  return 'version' in ort ? `onnxruntime-node ${ort.version}` : ort.skipped;
}

/** The table `awq bench gemm` prints (exported for its test). */
export function formatTable(
  records: GemmBenchRecord[],
  r: Pick<GemmBenchResult, 'machine' | 'threads' | 'bandwidthGBs' | 'fmaPeakGflops' | 'ort' | 'notes'>,
): string {
  const lines = [
    `machine: ${r.machine}`,
    `threads: ${r.threads}; streaming read bandwidth ${r.bandwidthGBs.toFixed(1)} GB/s; fp32 FMA peak ${r.fmaPeakGflops.toFixed(0)} GFLOP/s; peer: ${ortText(r.ort)}`,
    'GB/s = AutoAWQ weight bytes (qweight + qzeros + fp16 scales) / time, for every impl; calls interleaved round-robin, medians.',
    '',
    "'vs floor': the floor row's time over this row's (M = 1, stream: the same bytes read in the same run).",
    '',
    '| m | k x n | mode | impl | median ms | GB/s | % of bandwidth | GFLOP/s | vs ort-acc0 | vs floor |',
    '|---:|---|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  // Each record's measurement: the consecutive records of one m, shape and mode that benchGemm
  // timed together, one per impl. A shape given twice in --shapes is measured twice, and each
  // row is compared with the baselines of its own measurement.
  const sameKey = (a: GemmBenchRecord, b: GemmBenchRecord) => a.m === b.m && a.k === b.k && a.n === b.n && a.mode === b.mode;
  const measurement: number[] = [];
  let seen = new Set<string>();
  records.forEach((x, i) => {
    const fresh = i === 0 || !sameKey(records[i - 1], x) || seen.has(x.impl);
    if (fresh) seen = new Set();
    seen.add(x.impl);
    measurement.push(fresh ? i : measurement[i - 1]);
  });
  const same = (i: number, impl: string) => records.find((y, j) => measurement[j] === measurement[i] && y.impl === impl);
  for (const [i, x] of records.entries()) {
    const peer = same(i, 'ort-acc0');
    const floor = same(i, 'floor');
    lines.push(
      `| ${x.m} | ${x.k} x ${x.n} | ${x.mode} | ${x.impl} | ${x.medianMs.toFixed(3)} | ${x.gbPerS.toFixed(1)} | ` +
        `${((100 * x.gbPerS) / r.bandwidthGBs).toFixed(0)}% | ${x.gflopPerS === null ? '-' : x.gflopPerS.toFixed(1)} | ${peer ? `${(peer.medianMs / x.medianMs).toFixed(2)}x` : ''} | ` +
        `${floor && x.impl !== 'floor' ? `${((100 * floor.medianMs) / x.medianMs).toFixed(0)}%` : ''} |`,
    );
  }
  if (r.notes.length) lines.push('', ...r.notes.map((n) => `note: ${n}`));
  return lines.join('\n');
}
