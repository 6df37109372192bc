/**
 * `awq bench gemm`: int4 GEMM timings on the CPU against ONNX Runtime and the memory-bandwidth
 * floor. `awq bench cuda-gemm`: the CUDA int4 GEMM against the dense fp16 GEMM and the copy
 * bandwidth of the device.
 */
import type { Command } from 'commander';

import { benchCudaGemm, CUDA_DEFAULT_MS, CUDA_DEFAULT_SHAPES, formatCudaTable } from '../bench/cuda-gemm.js';
import { benchGemm, DEFAULT_MS, DEFAULT_SHAPES, GEMM_IMPLS, type GemmBenchRecord, type GemmImpl } from '../bench/gemm.js';
import { InvalidArgumentError } from '../errors.js';

interface GemmCliOptions {
  json?: boolean;
  quick?: boolean;
  threads?: string;
  m?: string;
  shapes?: string;
  impl?: string;
  streamMb?: string;
}

function ints(flag: string, v: string): number[] {
  return v.split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag}: expected positive integers separated by commas, got ${v}`);
    return n;
  });
}

function shapeList(v: string): Array<[number, number]> {
  return v.split(',').map((s) => {
    const [k, n] = s.split('x').map(Number);
    if (!Number.isInteger(k) || !Number.isInteger(n) || k < 128 || n < 8 || k % 128 || n % 8) {
      throw new InvalidArgumentError(`--shapes: expected KxN with K a multiple of 128 and N of 8, got ${s}`);
    }
    return [k, n] as [number, number];
  });
}

const shapeText = (shapes: Array<[number, number]>) => shapes.map(([k, n]) => `${k}x${n}`).join(',');

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks that measure their own baselines in the same run');
  bench
    .command('gemm')
    .description('int4 GEMM (exact and int8 modes) vs ONNX Runtime MatMulNBits and the DRAM floor, stream and warm')
    .option('--json', 'print a JSON array of {m, k, n, threads, impl, mode, medianMs, gbPerS, gflopPerS}')
    .option('--quick', 'a short run: shape 4096x11008, m = 1 and 128, fewer calls')
    .option('--threads <n>', 'threads for every impl (default: all available cores)')
    .option('--m <list>', `rows of x (default ${DEFAULT_MS.join(',')})`)
    .option('--shapes <list>', `KxN pairs, in x out (default ${shapeText(DEFAULT_SHAPES)})`)
    .option('--impl <list>', `subset of ${GEMM_IMPLS.join(',')}`)
    .option('--stream-mb <mb>', 'total size of the distinct weight copies in stream mode (default 400)')
    .action(async (opts: GemmCliOptions) => {
      const shapes = opts.shapes ? shapeList(opts.shapes) : undefined;
      const impls = opts.impl?.split(',').map((s) => {
        if (!GEMM_IMPLS.includes(s as GemmImpl)) throw new InvalidArgumentError(`--impl: expected some of ${GEMM_IMPLS.join(',')}, got ${s}`);
        return s as GemmImpl;
      });
      const quick = opts.quick === true;
      const result = await benchGemm({
        threads: opts.threads ? ints('--threads', opts.threads)[0] : undefined,
        ms: opts.m ? ints('--m', opts.m) : quick ? [1, 128] : undefined,
        shapes: shapes ?? (quick ? [[4096, 11008]] : undefined),
        impls,
        streamMB: opts.streamMb ? ints('--stream-mb', opts.streamMb)[0] : undefined,
        minCalls: quick ? 3 : 7,
        minSeconds: quick ? 0.15 : 0.5,
        log: (line) => process.stderr.write(`${line}\n`),
      });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(result.records, null, 1)}\n`);
        return;
      }
      process.stdout.write(`${formatTable(result.records, result)}\n`);
    });
  bench
    .command('cuda-gemm')
    .description('CUDA int4 GEMM vs the dense fp16 GEMM and the device copy bandwidth (device 0)')
    .option('--json', 'print a JSON object {device, computeCapability, copyGBs, records: [{m, k, n, impl, medianMs, gbPerS, tflopPerS, shareOfCopyBandwidth}]}')
    .option('--quick', 'a short run: shape 4096x11008, m = 1 and 16, fewer timings')
    .option('--m <list>', `rows of x (default ${CUDA_DEFAULT_MS.join(',')})`)
    .option('--shapes <list>', `KxN pairs, in x out (default ${shapeText(CUDA_DEFAULT_SHAPES)})`)
    .option('--reps <n>', 'timings per measurement, each a median (default 15)')
    .action(async (opts: { json?: boolean; quick?: boolean; m?: string; shapes?: string; reps?: string }) => {
      const quick = opts.quick === true;
      const result = await benchCudaGemm({
        ms: opts.m ? ints('--m', opts.m) : quick ? [1, 16] : undefined,
        shapes: opts.shapes ? shapeList(opts.shapes) : quick ? [[4096, 11008]] : undefined,
        reps: opts.reps ? ints('--reps', opts.reps)[0] : quick ? 5 : undefined,
        log: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 1)}\n` : `${formatCudaTable(result)}\n`);
    });
}

/** The table `awq bench gemm` prints (exported for its test). */
export function formatTable(
  records: GemmBenchRecord[],
  r: { machine: string; threads: number; bandwidthGBs: number; fmaPeakGflops: number; ort: string; notes: string[] },
): string {
  const lines = [
    `machine: ${r.machine}`,
    `threads: ${r.threads}; streaming read bandwidth ${r.bandwidthGBs.toFixed(1)} GB/s; fp32 FMA peak ${r.fmaPeakGflops.toFixed(0)} GFLOP/s; peer: ${r.ort}`,
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
        `${((100 * x.gbPerS) / r.bandwidthGBs).toFixed(0)}% | ${x.gflopPerS.toFixed(1)} | ${peer ? `${(peer.medianMs / x.medianMs).toFixed(2)}x` : ''} | ` +
        `${floor && x.impl !== 'floor' ? `${((100 * floor.medianMs) / x.medianMs).toFixed(0)}%` : ''} |`,
    );
  }
  if (r.notes.length) lines.push('', ...r.notes.map((n) => `note: ${n}`));
  return lines.join('\n');
}
