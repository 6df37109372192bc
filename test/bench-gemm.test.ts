// `awq bench gemm` on a tiny shape: every requested impl and mode yields a finite record, and the
// floor's bandwidth probe (a natively allocated pool) rejects reads past its end.
import { describe, expect, it } from 'vitest';

import { benchGemm, MAX_M, type GemmBenchRecord, type GemmImpl } from '../dist/bench/gemm.js';
import { formatTable } from '../dist/cli/bench.js';
import { native } from '../dist/native.js';

describe('awq bench gemm', () => {
  it('times awq (exact, int8) and the floor in stream and warm modes', async () => {
    const res = await benchGemm({
      ms: [1, 3],
      shapes: [[256, 64]],
      impls: ['awq', 'awq-int8', 'floor'],
      streamMB: 1,
      minCalls: 2,
      minSeconds: 0,
    });
    expect(res.bandwidthGBs).toBeGreaterThan(0);
    const key = (r: { m: number; impl: string; mode: string }) => `${r.m} ${r.impl} ${r.mode}`;
    // The floor is a streaming probe: M = 1, stream mode only.
    expect(res.records.map(key).sort()).toEqual(
      ['1 awq stream', '1 awq warm', '1 awq-int8 stream', '1 awq-int8 warm', '1 floor stream',
       '3 awq stream', '3 awq warm', '3 awq-int8 stream', '3 awq-int8 warm'].sort(),
    );
    for (const r of res.records) {
      expect(r.k).toBe(256);
      expect(r.n).toBe(64);
      expect(Number.isFinite(r.medianMs) && r.medianMs > 0).toBe(true);
      expect(r.gbPerS).toBeCloseTo((256 * 64 / 2 + 2 * 64 / 2 + 2 * 64 * 2) / (r.medianMs / 1e3) / 1e9, 6);
      // The floor computes nothing: no GFLOP/s figure, where every other impl has 2 m k n / time.
      if (r.impl === 'floor') expect(r.gflopPerS).toBeNull();
      else expect(r.gflopPerS).toBeCloseTo((2 * r.m * 256 * 64) / (r.medianMs / 1e3) / 1e9, 6);
    }
  });

  it('times the dense baselines on the dequantized weights: fp32, and fp16 as stored (widened as denseGemm reads it)', async () => {
    const res = await benchGemm({ ms: [1, 4], shapes: [[256, 64]], impls: ['dense-fp32', 'dense-fp16'], streamMB: 1, minCalls: 2, minSeconds: 0 });
    const key = (r: { m: number; impl: string; mode: string }) => `${r.m} ${r.impl} ${r.mode}`;
    expect(res.records.map(key).sort()).toEqual(
      ['1 dense-fp16 stream', '1 dense-fp16 warm', '1 dense-fp32 stream', '1 dense-fp32 warm',
       '4 dense-fp16 stream', '4 dense-fp16 warm', '4 dense-fp32 stream', '4 dense-fp32 warm'].sort(),
    );
    for (const r of res.records) expect(Number.isFinite(r.medianMs) && r.medianMs > 0 && r.gflopPerS! > 0).toBe(true);
  });

  it('prints each measurement of a shape given twice against its own floor and peer', () => {
    const rec = (impl: GemmImpl, medianMs: number): GemmBenchRecord =>
      ({ m: 1, k: 256, n: 64, threads: 2, impl, mode: 'stream', medianMs, minMs: medianMs, p25Ms: medianMs, p75Ms: medianMs, calls: 3, gbPerS: 1, gflopPerS: impl === 'floor' ? null : 1 });
    // --shapes 256x64,256x64: two blocks of the same key, each with its own baselines
    const records = [rec('awq', 2), rec('ort-acc0', 4), rec('floor', 1), rec('awq', 5), rec('ort-acc0', 20), rec('floor', 4)];
    const table = formatTable(records, { machine: 'test', threads: 2, bandwidthGBs: 1, fmaPeakGflops: 1, ort: { version: 'test' }, notes: [] });
    expect(table).toMatch(/peer: onnxruntime-node test/);
    // | m | k x n | mode | impl | median ms | GB/s | % of bandwidth | GFLOP/s | vs ort-acc0 | vs floor |
    const awqRows = table.split('\n').filter((l) => l.includes('| awq |')).map((l) => l.split('|').map((c) => c.trim()));
    expect(awqRows.map((c) => [c[9], c[10]])).toEqual([['2.00x', '50%'], ['4.00x', '80%']]);
    const floorRows = table.split('\n').filter((l) => l.includes('| floor |')).map((l) => l.split('|').map((c) => c.trim()));
    expect(floorRows.map((c) => c[8])).toEqual(['-', '-']); // GFLOP/s: the floor computes nothing
  });

  it('checks its options before measuring anything', async () => {
    await expect(benchGemm({ ms: [MAX_M + 1], shapes: [[4096, 4096]] })).rejects.toThrow(/m must be an integer from 1 to 65536, got 65537/);
    await expect(benchGemm({ ms: [4], impls: ['floor'] })).rejects.toThrow(/nothing to time: the floor runs only at m = 1/);
    await expect(benchGemm({ ms: [1], shapes: [[1 << 20, 1 << 13]] })).rejects.toThrow(/k x n = 8589934592 elements/);
    await expect(benchGemm({ ms: [1], shapes: [[4096, 4096]], impls: [] })).rejects.toThrow(/must not be empty/);
  });

  it('reads a stream pool only within its bounds', () => {
    const pool = native().benchStreamPool(4096);
    expect(native().benchStreamRead(pool, 0, 4096)).toBe(0); // zero-filled
    expect(() => native().benchStreamRead(pool, 1024, 4096)).toThrow(/past the pool's 4096 bytes/);
    expect(() => native().benchStreamRead({} as never, 0, 1)).toThrow(/benchStreamPool/);
  });

  it('refuses another binding\'s handle: each kind of handle carries its own type tag', async () => {
    const pool = native().benchStreamPool(4096);
    expect(() => native().int4Info(pool as never)).toThrow(/expected an int4 weight handle/);
    const q = new Uint8Array(8 * 16).fill(3), zeros = new Uint8Array(8).fill(8), scales = new Float32Array(8).fill(0.5);
    const w = await native().int4PackQuantized(q, zeros, scales, null, 16, 8, 16);
    expect(native().int4Info(w).in).toBe(16);
    expect(() => native().benchStreamRead(w as never, 0, 1)).toThrow(/benchStreamPool/);
  });
});
