#!/usr/bin/env node
// Dense fp32 GEMM throughput for the shapes AWQ runs, against the measured FMA ceiling and the
// portable reference kernel, both measured in this run; and the same products with bf16 operands
// (impl 'bf16': vdpbf16ps on AVX512-BF16, else the fp32 kernel on rounded operands), whose
// peakFraction is still against the fp32 FMA peak (AVX512-BF16's own peak is twice that).
//
//   node benchmarks/gemm-fp32.mjs [--json] [--quick] [--threads 1,2] [--no-reference]
//
// Table for people; --json prints {isa, fmaPeakGflops: {threads: GFLOP/s}, records: [{m, n, k,
// transA, transB, threads, impl, medianMs, gflopPerS, peakFraction, shape}]}. Timings on a shared
// machine are noisy: each figure is a median of several runs, and peakFraction divides by the
// FMA peak measured on the same thread count in this process.
import { backends, denseGemm, fmaPeakGflops, setThreads } from '../dist/index.js';
import { native } from '../dist/native.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const quick = args.includes('--quick');
const withReference = !args.includes('--no-reference');
const threadsArg = args.includes('--threads') ? args[args.indexOf('--threads') + 1] : '1,2';
const threadCounts = threadsArg.split(',').map(Number);
if (threadCounts.some((t) => !Number.isInteger(t) || t < 1)) throw new Error(`--threads: expected e.g. 1,2, got ${threadsArg}`);

// [label, m, n, k, transA, transB]
const shapes = [
  ['linear 512->512 (x2048 tok)', 2048, 512, 512, false, true],
  ['linear 512->128 (x2048 tok)', 2048, 128, 512, false, true],
  ['linear 512->1536 (x2048 tok)', 2048, 1536, 512, false, true],
  ['linear 1536->512 (x2048 tok)', 2048, 512, 1536, false, true],
  ['attn S=QK^T 512x512x64', 512, 512, 64, false, true],
  ['attn O=PV 512x64x512', 512, 64, 512, false, false],
  ['gram X^TX 512 (n=8192)', 512, 512, 8192, true, false],
  ['gram X^TX 1536 (n=4096)', 1536, 1536, 4096, true, false],
  ...(quick
    ? []
    : [
        ['7B linear 4096->4096 (x512)', 512, 4096, 4096, false, true],
        ['7B linear 4096->11008 (x512)', 512, 11008, 4096, false, true],
        ['7B linear 11008->4096 (x512)', 512, 4096, 11008, false, true],
        ['7B gram X^TX 4096 (n=2048)', 4096, 4096, 2048, true, false],
      ]),
];

function randomMatrix(n, seed) {
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 4294967296 - 0.5;
  }
  return x;
}

// Median wall time of `run`, after one warm-up, over at least minReps runs and ~minSeconds.
async function timeIt(run, { minReps = 3, maxReps = 9, minSeconds = 0.6, warmUp = true } = {}) {
  if (warmUp) await run();
  const times = [];
  const t0 = performance.now();
  while (times.length < minReps || (times.length < maxReps && (performance.now() - t0) / 1000 < minSeconds)) {
    const t = performance.now();
    await run();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

const isa = backends().cpu.isa;
const peaks = {};
for (const t of threadCounts) {
  setThreads(t);
  peaks[t] = await fmaPeakGflops({ secondsPerRep: 0.05, reps: 7 });
}

const records = [];
for (const [label, m, n, k, transA, transB] of shapes) {
  const a = randomMatrix(m * k, 1);
  // Gram shapes pass the same buffer twice (X^T X), as the scale search does: sgemm then takes
  // its symmetric path (half the tiles), so GFLOP/s counts the nominal 2mnk and can exceed peak.
  const b = transA && !transB && m === n ? a : randomMatrix(k * n, 2);
  const c = new Float32Array(m * n);
  for (const threads of threadCounts) {
    setThreads(threads);
    const impls = [[isa, m], ['bf16', m]];
    // The portable reference runs at 0.3-1.5 GFLOP/s here: time it on a row slice of ~0.15 GFLOP.
    if (withReference) impls.push(['portable', Math.max(1, Math.min(m, Math.floor(1.5e8 / (2 * n * k))))]);
    for (const [impl, rows] of impls) {
      native().setIsaCap(impl === 'portable' ? 'portable' : 'avx512');
      const lda = transA ? m : k;
      const ms = await timeIt(
        () => denseGemm({ a, b, c, m: rows, n, k, transA, transB, lda, precision: impl === 'bf16' ? 'bf16' : 'fp32' }),
        impl === 'portable' ? { minReps: 1, maxReps: 1, minSeconds: 0, warmUp: false } : undefined,
      );
      native().setIsaCap('avx512');
      const gflop = (2 * rows * n * k) / 1e9;
      const gflopPerS = gflop / (ms / 1000);
      if (!json) process.stderr.write(`  ${label}, ${threads} thread(s), ${impl}: ${gflopPerS.toFixed(1)} GFLOP/s\n`);
      records.push({
        shape: label,
        m: rows,
        n,
        k,
        transA,
        transB,
        threads,
        impl,
        medianMs: Number(ms.toFixed(3)),
        gflopPerS: Number(gflopPerS.toFixed(2)),
        peakFraction: Number((gflopPerS / peaks[threads]).toFixed(3)),
      });
    }
  }
}
setThreads(0);

if (json) {
  console.log(JSON.stringify({ isa, bf16Products: backends().cpu.bf16Products, fmaPeakGflops: peaks, records }, null, 1));
} else {
  const peakText = threadCounts.map((t) => `${t} thread${t > 1 ? 's' : ''}: ${peaks[t].toFixed(1)}`).join(', ');
  const bf16 = backends().cpu.bf16Products ? 'bf16 on AVX512-BF16' : 'bf16 on the fp32 kernels (no AVX512-BF16)';
  console.log(`fp32 GEMM, ISA ${isa}, ${bf16}; measured fp32 FMA peak GFLOP/s ${peakText}`);
  const rows = [['shape', 'm', 'n', 'k', 'op', 'thr', 'impl', 'ms', 'GFLOP/s', '% peak', 'vs portable']];
  for (const r of records) {
    const ref = records.find((q) => q.shape === r.shape && q.threads === r.threads && q.impl === 'portable');
    rows.push([
      r.shape,
      r.m,
      r.n,
      r.k,
      `${r.transA ? 'T' : 'N'}${r.transB ? 'T' : 'N'}`,
      r.threads,
      r.impl,
      r.medianMs.toFixed(2),
      r.gflopPerS.toFixed(1),
      (100 * r.peakFraction).toFixed(0),
      ref && r.impl !== 'portable' ? `${(r.gflopPerS / ref.gflopPerS).toFixed(1)}x` : '',
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => String(row[i]).length)));
  for (const row of rows) console.log(row.map((v, i) => (i === 0 ? String(v).padEnd(widths[i]) : String(v).padStart(widths[i]))).join('  '));
}
