#!/usr/bin/env node
// Quantizes synthetic decoder layers with the shapes of a 7B Llama (hidden 4096, intermediate
// 11008, 32 heads, no GQA) on calibration blocks of random activations with a few outlier
// channels, and reports seconds per layer (by phase) and peak RSS, so a user can estimate a real
// 7B run (32 layers) on this machine.
//
//   node benchmarks/layer-7b.mjs [--layers 2] [--blocks 16] [--seqlen 512] [--precision fp32|bf16] [--json]
import { cpus } from 'node:os';

import { quantizeDecoderLayer, backends } from '../dist/index.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const layers = opt('--layers', 2);
const blocks = opt('--blocks', 16);
const seqlen = opt('--seqlen', 512);
const json = args.includes('--json');
const precision = args.includes('--precision') ? args[args.indexOf('--precision') + 1] : 'fp32';
const H = 4096, I = 11008, heads = 32, headDim = 128;

let seed = 1234567;
function randn() {
  // xorshift + Box-Muller: deterministic, fast enough for 200M values
  seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
  const u = ((seed >>> 0) + 1) / 4294967297;
  seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
  const v = ((seed >>> 0) + 1) / 4294967297;
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}
function randomMatrix(n, std) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = randn() * std;
  return a;
}

const invFreq = new Float32Array(headDim / 2).map((_, i) => 1 / 10000 ** ((2 * i) / headDim));
const arch = { hiddenSize: H, intermediateSize: I, numHeads: heads, numKvHeads: heads, headDim, rmsNormEps: 1e-5, ropeInvFreq: invFreq, qkNorm: false };
const tokens = blocks * seqlen;
let hidden = randomMatrix(tokens * H, 1);
for (const c of [7, 1111, 2048, 3999]) for (let t = 0; t < tokens; t++) hidden[t * H + c] *= 40; // outlier channels

const results = [];
for (let l = 0; l < layers; l++) {
  const weights = {
    inputNorm: new Float32Array(H).fill(1), postNorm: new Float32Array(H).fill(1),
    q: randomMatrix(H * H, 0.02), k: randomMatrix(H * H, 0.02), v: randomMatrix(H * H, 0.02), o: randomMatrix(H * H, 0.02),
    gate: randomMatrix(I * H, 0.02), up: randomMatrix(I * H, 0.02), down: randomMatrix(H * I, 0.02),
  };
  const t0 = performance.now();
  const r = await quantizeDecoderLayer(arch, weights, hidden, seqlen, { wBit: 4, groupSize: 128, zeroPoint: true, duoScaling: true, clip: true, method: 'awq', precision });
  const seconds = (performance.now() - t0) / 1000;
  hidden = r.output;
  const t = r.report.timingsMs;
  results.push({ layer: l, seconds, forwardS: t.forward / 1000, scaleSearchS: t.scaleSearch / 1000, clipSearchS: t.clipSearch / 1000, quantizeS: t.quantize / 1000, gflop: r.report.gflop, gflopPerS: r.report.gflop / seconds });
  if (!json) process.stderr.write(`layer ${l}: ${seconds.toFixed(1)} s\n`);
}
const peakRssMB = (process.resourceUsage().maxRSS * 1024) / 2 ** 20;
const b = backends();
const machine = `${cpus()[0]?.model ?? 'cpu'}, ${b.cpu.threads} threads, ${b.cpu.isa}${b.cpu.bf16Products ? ' (bf16 products)' : ''}`;
const perLayer = results.reduce((s, r) => s + r.seconds, 0) / results.length;
if (json) {
  console.log(JSON.stringify({ machine, precision, blocks, seqlen, results, secondsPerLayer: perLayer, estimated7BSeconds: perLayer * 32, peakRssMB }, null, 2));
} else {
  console.log(`\n7B-shaped layers (hidden ${H}, intermediate ${I}, ${heads} heads), ${blocks} blocks of ${seqlen} tokens, ${precision} products; machine: ${machine}`);
  console.log('layer  total s  forward s  scale s  clip s  quant s  GFLOP  GFLOP/s');
  for (const r of results) {
    console.log(`${String(r.layer).padStart(5)}  ${r.seconds.toFixed(1).padStart(7)}  ${r.forwardS.toFixed(1).padStart(9)}  ${r.scaleSearchS.toFixed(1).padStart(7)}  ${r.clipSearchS.toFixed(1).padStart(6)}  ${r.quantizeS.toFixed(1).padStart(7)}  ${r.gflop.toFixed(0).padStart(5)}  ${r.gflopPerS.toFixed(0).padStart(7)}`);
  }
  console.log(`mean ${perLayer.toFixed(1)} s per layer -> about ${((perLayer * 32) / 60).toFixed(1)} min for 32 layers at ${blocks} blocks; peak RSS ${peakRssMB.toFixed(0)} MB`);
}
