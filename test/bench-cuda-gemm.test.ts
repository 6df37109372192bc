// `awq bench cuda-gemm`: with a CUDA device, a tiny run yields a finite record per impl and m;
// without one (CI, a CPU build), a CudaError that says why and how to build one. The table's
// ratio column is checked on fixed records.
import { describe, expect, it } from 'vitest';

import { backends } from '../dist/backends.js';
import { benchCudaGemm, formatCudaTable, type CudaGemmBenchResult } from '../dist/bench/cuda-gemm.js';
import { CudaError } from '../dist/errors.js';

describe('awq bench cuda-gemm', () => {
  it(backends().cuda ? 'times int4 and dense fp16 on device 0' : 'says why it cannot run without a CUDA device', async () => {
    const run = benchCudaGemm({ ms: [1, 16, 40], shapes: [[256, 64]], reps: 3 });
    if (!backends().cuda) {
      await expect(run).rejects.toBeInstanceOf(CudaError);
      await expect(run).rejects.toThrow(/npm run build:cuda/);
      return;
    }
    const res = await run;
    expect(res.copyGBs).toBeGreaterThan(0);
    expect(res.records.map((r) => `${r.m} ${r.impl}`)).toEqual(
      ['1 cuda-int4', '1 cuda-dense-fp16', '16 cuda-int4', '16 cuda-dense-fp16', '40 cuda-int4', '40 cuda-dense-fp16'],
    );
    for (const r of res.records) {
      expect(Number.isFinite(r.medianMs) && r.medianMs > 0).toBe(true);
      expect(r.shareOfCopyBandwidth).toBeCloseTo(r.gbPerS / res.copyGBs, 9);
    }
  });

  it('prints dense over int4 time on the int4 rows', () => {
    const rec = (m: number, impl: 'cuda-int4' | 'cuda-dense-fp16', medianMs: number) =>
      ({ m, k: 8192, n: 8192, impl, medianMs, gbPerS: 100, tflopPerS: 1, shareOfCopyBandwidth: 0.5 });
    const result: CudaGemmBenchResult = {
      awqVersion: '0', node: process.versions.node, binary: 'awq.node', timestamp: new Date(0).toISOString(), reps: 15,
      device: 'test', computeCapability: '9.0', copyGBs: 200,
      records: [rec(1, 'cuda-int4', 0.01), rec(1, 'cuda-dense-fp16', 0.03), rec(16, 'cuda-int4', 0.02), rec(16, 'cuda-dense-fp16', 0.05)],
    };
    // | m | k x n | impl | median ms | GB/s | % of copy | TFLOP/s | dense / int4 time |
    const rows = formatCudaTable(result).split('\n').filter((l) => l.includes('| cuda-')).map((l) => l.split('|').map((c) => c.trim()));
    expect(rows.map((c) => [c[1], c[3], c[6], c[8]])).toEqual([
      ['1', 'cuda-int4', '50%', '3.00x'], ['1', 'cuda-dense-fp16', '50%', ''],
      ['16', 'cuda-int4', '50%', '2.50x'], ['16', 'cuda-dense-fp16', '50%', ''],
    ]);
  });
});
