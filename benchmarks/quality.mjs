#!/usr/bin/env node
// Quality benchmark: quantizes ../shared/models/llama-22m with RTN and AWQ at w4 and w3 (g128),
// evaluates each (and the full-precision model and the independent AWQ checkpoint) with the
// REFERENCE.md section 7 protocol, and prints the perplexities beside REFERENCE.md section 8,
// with quantization wall time and peak memory (RSS) of each run.
//
//   node benchmarks/quality.mjs [--all] [--json] [--only awq-w4,rtn-w4] [--work /tmp/awq-quality]
//                               [--backend cpu|cuda|auto] [--precision fp32|bf16|fp16]
//                               [--precisions fp32,bf16]
//
// --all also evaluates all 782 windows (slow); the default is the first 64 windows.
// --precisions quantizes each AWQ row once per precision of the search's products (RTN has no
// search) and gives the reduced-precision rows' perplexity change against the fp32 row.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const shared = join(root, '..', 'shared');
const cli = join(root, 'dist', 'cli', 'main.js');
const model = join(shared, 'models', 'llama-22m');
const args = process.argv.slice(2);
const all = args.includes('--all');
const json = args.includes('--json');
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : null;
const work = args.includes('--work') ? args[args.indexOf('--work') + 1] : '/tmp/awq-quality';
const backend = args.includes('--backend') ? args[args.indexOf('--backend') + 1] : 'cpu';
const precision = args.includes('--precision') ? args[args.indexOf('--precision') + 1] : 'fp32';
const precisions = args.includes('--precisions') ? args[args.indexOf('--precisions') + 1].split(',') : [precision];

// REFERENCE.md section 8 (fp32 compute): [first 64 windows, all 782 windows]
const reference = {
  fp: [127.27, 210.43],
  'rtn-w4': [129.07, 213.11],
  'awq-w4': [128.1, 212.56],
  'rtn-w3': [134.36, 222.26],
  'awq-w3': [132.85, 221.1],
  'reference-awq-w4': [128.08, null],
};

function runTimed(argv) {
  const started = performance.now();
  let stdout = '';
  try {
    stdout = execFileSync('node', [cli, ...argv], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 1 << 26,
    });
  } catch (err) {
    process.stderr.write(err.stderr ?? '');
    throw err;
  }
  return { stdout, seconds: (performance.now() - started) / 1000 };
}

function evalPpl(folder, windows) {
  const argv = ['eval', folder, '--text', join(shared, 'data', 'eval.txt'), '--json', '--quiet'];
  if (windows) argv.push('--windows', String(windows));
  return JSON.parse(execFileSync('node', [cli, ...argv], { encoding: 'utf8', maxBuffer: 1 << 26 }).trim().split('\n').pop());
}

const awqRows = (wBit) => precisions.map((p) => ({ name: `awq-w${wBit}`, method: 'awq', wBit, precision: p }));
const settings = [
  { name: 'fp', folder: model },
  { name: 'reference-awq-w4', folder: join(shared, 'models', 'llama-22m-awq') },
  { name: 'rtn-w4', method: 'rtn', wBit: 4, precision },
  ...awqRows(4),
  { name: 'rtn-w3', method: 'rtn', wBit: 3, precision },
  ...awqRows(3),
].filter((s) => !only || only.includes(s.name));
const label = (s) => (s.method === 'awq' && precisions.length > 1 ? `${s.name} ${s.precision}` : s.name);

mkdirSync(work, { recursive: true });
const rows = [];
for (const s of settings) {
  const row = { setting: label(s), precision: s.precision };
  let folder = s.folder;
  if (!folder) {
    folder = join(work, `${s.name}-${s.precision}`);
    rmSync(folder, { recursive: true, force: true });
    const q = runTimed([
      'quantize', model, '--out', folder, '--calib', join(shared, 'data', 'calib.jsonl'),
      '--method', s.method, '--w-bit', String(s.wBit), '--group-size', '128', '--json', '--quiet',
      '--backend', backend, '--precision', s.precision,
    ]);
    const report = JSON.parse(q.stdout.trim().split('\n').pop());
    row.backend = report.backend;
    row.quantizeSeconds = report.totalMs / 1000;
    row.peakRssMB = report.peakRssBytes / 2 ** 20;
    const phases = { forward: 0, scaleSearch: 0, clipSearch: 0, quantize: 0 };
    let gflop = 0;
    for (const l of report.layers) {
      for (const k of Object.keys(phases)) phases[k] += (l.timingsMs?.[k] ?? 0) / 1000;
      gflop += l.gflop ?? 0;
    }
    row.phaseSeconds = phases;
    row.forwardGflopPerS = s.method === 'awq' && gflop > 0 ? gflop / (phases.forward + phases.scaleSearch + phases.clipSearch) : null;
  }
  const e64 = evalPpl(folder, 64);
  row.ppl64 = e64.perplexity;
  row.ref64 = reference[s.name][0];
  row.diff64Pct = (100 * (row.ppl64 - row.ref64)) / row.ref64;
  if (all) {
    const e = evalPpl(folder);
    row.pplAll = e.perplexity;
    row.refAll = reference[s.name][1];
    row.diffAllPct = row.refAll ? (100 * (row.pplAll - row.refAll)) / row.refAll : null;
  }
  // a reduced-precision AWQ row against the fp32 row of the same setting
  const base = s.precision && s.precision !== 'fp32' ? rows.find((r) => r.setting === `${s.name} fp32`) : null;
  if (base) {
    row.vsFp32Pct64 = (100 * (row.ppl64 - base.ppl64)) / base.ppl64;
    if (all) row.vsFp32PctAll = (100 * (row.pplAll - base.pplAll)) / base.pplAll;
  }
  rows.push(row);
  if (!json) process.stderr.write(`${row.setting}: ppl64 ${row.ppl64.toFixed(2)}${row.quantizeSeconds ? `, quantized in ${row.quantizeSeconds.toFixed(1)} s` : ''}\n`);
}

const machine = `${cpus()[0]?.model ?? 'cpu'} x${cpus().length}`;
if (json) {
  process.stdout.write(`${JSON.stringify({ machine, rows }, null, 2)}\n`);
} else {
  const f = (v, d = 2) => (v === undefined || v === null ? '-' : v.toFixed(d));
  const quantizedOn = rows.find((r) => r.backend)?.backend ?? backend;
  console.log(`\nquality on llama-22m (machine: ${machine}; quantized on ${quantizedOn}; perplexity, REFERENCE.md section 7 protocol, seqlen 512)`);
  console.log('setting            ppl@64   ref@64   diff%   ppl@all  ref@all  diff%   quantize s  peak RSS MB  fwd GFLOP/s  vs fp32 % (64 / all)');
  for (const r of rows) {
    const vs = r.vsFp32Pct64 === undefined ? '' : `  ${f(r.vsFp32Pct64)} / ${f(r.vsFp32PctAll)}`;
    console.log(
      `${r.setting.padEnd(17)}  ${f(r.ppl64).padStart(7)}  ${f(r.ref64).padStart(7)}  ${f(r.diff64Pct).padStart(6)}  ` +
        `${f(r.pplAll).padStart(8)}  ${f(r.refAll).padStart(7)}  ${f(r.diffAllPct).padStart(6)}  ${f(r.quantizeSeconds, 1).padStart(10)}  ` +
        `${f(r.peakRssMB, 0).padStart(11)}  ${f(r.forwardGflopPerS, 0).padStart(11)}${vs}`,
    );
  }
}
