#!/usr/bin/env node
// arm64 kernels without arm64 hardware: the guest instructions one call of each CPU kernel
// executes, NEON against the portable C++ in the same run, counted under qemu-aarch64 by a small
// TCG plugin (benchmarks/arm64/insncount.c, built here with gcc). Instructions are not cycles:
// the ratio says how much work the NEON code removed, not how fast a Graviton runs it (loads,
// latencies and memory bandwidth are not modelled). Each figure is
//   (count at 3 calls - count at 1 call) / 2,
// so setup, the first call's one-time work and process start cancel; one thread (AWQ_THREADS=1),
// so no pool spinning is counted. The int8 rows also run on a Cortex-A72 (no DotProd: the
// widening form) besides qemu's default core (SDOT); the bf16 sgemm on a Neoverse N1 (no BF16:
// the fp32 kernel on rounded operands) besides it (BFDOT).
//
//   node benchmarks/arm64-insns.mjs [--json]
// Needs aarch64-linux-gnu-g++, qemu-user (with plugin support, Debian's has it), gcc and cmake.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const json = process.argv.includes('--json');
const log = (s) => process.stderr.write(`${s}\n`);
const build = join(root, 'build-arm64/insns');
const plugin = join(build, 'libinsncount.so');
const exe = join(build, 'awq_kernel_insns');

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 16 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${(r.stderr || r.stdout || '').slice(-3000)}`);
  return r.stdout;
}

mkdirSync(build, { recursive: true });
log('building the counting plugin and the arm64 kernel driver ...');
sh('gcc', ['-shared', '-fPIC', '-O2', '-fvisibility=hidden', '-Wall', '-o', plugin, join(root, 'benchmarks/arm64/insncount.c')]);
sh('cmake', ['-S', root, '-B', build, '-DAWQ_TESTS=ON', '-DAWQ_CUDA=OFF', '-DCMAKE_BUILD_TYPE=Release',
  '-DCMAKE_SYSTEM_NAME=Linux', '-DCMAKE_SYSTEM_PROCESSOR=aarch64', '-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++',
  '-DCMAKE_EXE_LINKER_FLAGS=-static']);
sh('cmake', ['--build', build, '-j', '2', '--target', 'awq_kernel_insns']);

const countDir = join(tmpdir(), `awq-insns-${process.pid}`);
mkdirSync(countDir, { recursive: true });
let serial = 0;
// Instructions of `reps` calls plus setup, on `cpu` (qemu's -cpu), with the kernels capped at `isa`.
function count(kernel, reps, isa, cpu) {
  const out = join(countDir, `${serial++}`);
  const info = sh('qemu-aarch64', [...(cpu ? ['-cpu', cpu] : []), '-plugin', `${plugin},outfile=${out}`, exe, kernel, String(reps)], {
    env: { ...process.env, AWQ_THREADS: '1', AWQ_ISA: isa },
  });
  const m = /insns: (\d+)/.exec(readFileSync(out, 'utf8'));
  if (!m) throw new Error(`no count for ${kernel}`);
  return { insns: Number(m[1]), info: JSON.parse(info) };
}
function perCall(kernel, isa, cpu) {
  const one = count(kernel, 1, isa, cpu), three = count(kernel, 3, isa, cpu);
  return { perCall: (three.insns - one.insns) / 2, info: three.info };
}

const rows = [
  ['int4-exact-m1', null],
  ['int4-int8-m1', null],
  ['int4-int8-m1', 'cortex-a72'],
  ['int4-exact-m16', null],
  ['int4-exact-m128', null],
  ['sgemm-256', null],
  ['sgemm-256-bf16', null],
  ['sgemm-256-bf16', 'neoverse-n1'],
  ['softmax-512', null],
];
const records = [];
try {
  for (const [kernel, cpu] of rows) {
    log(`counting ${kernel}${cpu ? ` on ${cpu}` : ''} ...`);
    const portable = perCall(kernel, 'portable', cpu);
    const neon = perCall(kernel, 'neon', cpu);
    const { unit, per, features } = neon.info;
    records.push({
      kernel, cpu: cpu ?? 'qemu max', features, unit, per,
      portableInsns: portable.perCall, neonInsns: neon.perCall,
      portablePerUnit: portable.perCall / per, neonPerUnit: neon.perCall / per, ratio: portable.perCall / neon.perCall,
    });
  }
} finally {
  rmSync(countDir, { recursive: true, force: true });
}

if (json) {
  console.log(JSON.stringify({ method: 'qemu-aarch64 TCG plugin, guest instructions per call, 1 thread', records }, null, 2));
} else {
  console.log('| kernel | core (features) | portable insns / unit | NEON insns / unit | portable / NEON |');
  console.log('|---|---|---|---|---|');
  for (const r of records) {
    console.log(`| ${r.kernel} | ${r.cpu} (${r.features}) | ${r.portablePerUnit.toFixed(2)} per ${r.unit.replace(/s$/, '')} | ` +
      `${r.neonPerUnit.toFixed(3)} | ${r.ratio.toFixed(1)}x |`);
  }
}
