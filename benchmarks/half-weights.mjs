#!/usr/bin/env node
// A weight stored as fp16 / bf16 (denseGemm's HalfArray b: an lm_head from loadAwq({ widen: false }))
// against the same weight widened to fp32, in the same process, rounds interleaved so that drift
// on a shared machine hits both alike. At M = 1 the product streams the weight once, so half the
// bytes should be up to twice as fast; at larger M the widening rides on the packing.
//
//   node benchmarks/half-weights.mjs [--json] [--quick]
//
// Table for people; --json prints {isa, threads, records: [{label, m, n, k, b, medianMs, weightGBps,
// vsFp32}]} (weightGBps: the weight's stored bytes over the median time; vsFp32: the fp32 row's
// median over this one's). Each run also checks that a 16-bit weight's product is bitwise the
// product on its widening (the fp32 row holds the fp16 weight widened; bf16 holds other values).
import { backends, denseGemm, toFloat32 } from '../dist/index.js';

const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');

// [label, m, n (outputs), k (inputs)]
const shapes = [
  ['lm_head 32000x4096, 1 token', 1, 32000, 4096],
  ['linear 4096x4096, 1 token', 1, 4096, 4096],
  ['lm_head 32000x4096, 16 tokens', 16, 32000, 4096],
  ...(quick ? [] : [['lm_head 32000x4096, 128 tokens', 128, 32000, 4096]]),
];

function randomHalfBits(n, seed, dtype) {
  // values in about [-0.5, 0.5): sign, a small exponent range, random mantissa
  const out = new Uint16Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = dtype === 'fp16' ? (s >>> 16) & 0x87ff | 0x3000 : (s >>> 16) & 0x80ff | 0x3e00;
  }
  return out;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const b = backends();
const records = [];
for (const [label, m, n, k] of shapes) {
  const x = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i * 0.37));
  const variants = [];
  for (const dtype of ['fp16', 'bf16']) {
    const half = { data: randomHalfBits(n * k, 7, dtype), dtype };
    variants.push({ name: dtype, b: half, bytes: 2 * n * k });
    if (dtype === 'fp16') variants.unshift({ name: 'fp32', b: toFloat32(half), bytes: 4 * n * k });
  }
  const run = (v) => denseGemm({ a: x, b: v.b, m, n, k, transB: true });
  // bitwise checks: each 16-bit weight against its own widening (variants[0] is the fp16 one's)
  for (const v of variants.slice(1)) {
    const widened = v.name === 'fp16' ? variants[0] : { b: toFloat32(v.b) };
    const [got, want] = [await run(v), await run(widened)];
    if (Buffer.compare(Buffer.from(got.buffer), Buffer.from(want.buffer)) !== 0) throw new Error(`${label}: ${v.name} b differs from its widening`);
  }
  const times = new Map(variants.map((v) => [v.name, []]));
  for (const v of variants) await run(v); // warm-up
  const rounds = quick ? 5 : m === 1 ? 25 : 9;
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      const t = performance.now();
      await run(v);
      times.get(v.name).push(performance.now() - t);
    }
  }
  const fp32Ms = median(times.get('fp32'));
  for (const v of variants) {
    const medianMs = median(times.get(v.name));
    records.push({ label, m, n, k, b: v.name, medianMs, weightGBps: v.bytes / medianMs / 1e6, vsFp32: fp32Ms / medianMs });
  }
}

if (json) {
  console.log(JSON.stringify({ isa: b.cpu.isa, threads: b.cpu.threads, records }, null, 2));
} else {
  console.log(`isa ${b.cpu.isa}, ${b.cpu.threads} threads; medians of interleaved rounds; fp16 and bf16 products checked bitwise against their widened weights`);
  console.log('| shape | b stored | median ms | weight GB/s | speed vs fp32 |');
  console.log('|---|---|---:|---:|---:|');
  for (const r of records) console.log(`| ${r.label} | ${r.b} | ${r.medianMs.toFixed(2)} | ${r.weightGBps.toFixed(1)} | ${r.vsFp32.toFixed(2)}x |`);
}
