#!/usr/bin/env node
// `quantize --resume` on llama-22m, end to end: an uninterrupted run, a run stopped after layer 2
// (its layers kept in <out>.resume/), and the run that continues it; compares the two checkpoints
// file by file (the report aside) and their perplexity on the first windows of eval.txt.
// Written for the GPU machine (benchmarks/gpu-e2e.sh run: `--backend cuda`), where the resumed run
// uploads hidden states that were downloaded from the device; works on the CPU too.
//
//   node benchmarks/resume-check.mjs [--backend cpu|cuda] [--precision fp32|bf16] [--samples N] [--windows N] [--work DIR]
//
// Exit status 1 when the checkpoints differ by more than the perplexity tolerance (0.01%).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { evaluate, keptProgress, quantize } from '../dist/index.js';

const { values: a } = parseArgs({
  options: {
    backend: { type: 'string', default: 'cuda' },
    precision: { type: 'string', default: 'fp32' },
    samples: { type: 'string', default: '128' },
    windows: { type: 'string', default: '16' },
    work: { type: 'string', default: '/tmp/awq-resume-check' },
  },
});
const shared = '../shared';
const base = {
  model: join(shared, 'models/llama-22m'),
  calib: { kind: 'jsonl', path: join(shared, 'data/calib.jsonl') },
  nSamples: Number(a.samples),
  backend: a.backend,
  precision: a.precision,
};
rmSync(a.work, { recursive: true, force: true });
const whole = join(a.work, 'whole');
const out = join(a.work, 'resumed');

const t0 = performance.now();
await quantize({ ...base, out: whole });
const tWhole = performance.now() - t0;

const stop = new AbortController();
const stopped = await quantize({
  ...base,
  out,
  resume: true,
  signal: stop.signal,
  onProgress: (e) => {
    if (e.stage === 'layer' && e.layer === 2 && e.phase === 'done') stop.abort();
  },
}).catch((err) => err);
const kept = await keptProgress(out);
const t1 = performance.now();
const { report } = await quantize({ ...base, out, resume: true });
const tResumed = performance.now() - t1;

const digests = (dir) =>
  Object.fromEntries(
    readdirSync(dir)
      .filter((f) => f !== 'awq-report.json')
      .sort()
      .map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]),
  );
const dw = digests(whole);
const dr = digests(out);
const differing = Object.keys({ ...dw, ...dr }).filter((f) => dw[f] !== dr[f]);
const text = { textPath: join(shared, 'data/eval.txt'), windows: Number(a.windows) };
const pw = (await evaluate({ model: whole, ...text })).perplexity;
const pr = (await evaluate({ model: out, ...text })).perplexity;
const rel = Math.abs(pr - pw) / pw;

const result = {
  backend: report.backend,
  precision: a.precision,
  stoppedWith: stopped?.code ?? 'no error (the stop did not land)',
  keptLayers: kept?.layersDone ?? 0,
  resumedLayers: report.resumedLayers ?? 0,
  identicalFiles: differing.length === 0,
  differingFiles: differing,
  perplexity: { whole: pw, resumed: pr, relDiff: rel },
  seconds: { whole: tWhole / 1000, resumed: tResumed / 1000 },
};
console.log(JSON.stringify(result, null, 2));
const ok = result.keptLayers === 3 && result.resumedLayers === 3 && rel <= 1e-4;
console.log(ok ? 'resume check: OK' : 'resume check: FAILED');
process.exit(ok ? 0 : 1);
