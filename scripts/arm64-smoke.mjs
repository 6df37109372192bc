#!/usr/bin/env node
// The arm64 addon against this machine's portable kernels (scripts/check-arm64.sh runs it).
// AWQ_ARM64_NODE: the command that runs Node's arm64 build (qemu-aarch64 -L <sysroot> <node>);
// AWQ_NATIVE_BINARY: the arm64 addon it loads. Each check runs the same work under arm64 Node and
// under this Node with AWQ_ISA=portable, and compares. With AWQ_ISA=portable on arm64 too: the int4
// products bit for bit, the perplexity to 1e-6 (glibc's expf differs between the two architectures
// in the last bit at most). With the NEON kernels (arm64's default): the int4 products against
// float64 (exact mode) and the portable int8 products, the perplexity to 1e-5 (fused multiply-adds
// and another summation order), the round-to-nearest checkpoint byte for byte.
// Prints "smoke: N passed, N failed, N skipped".
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist/cli/main.js');
const shared = resolve(root, '../shared');

if (process.argv[2] === '--int4') {
  // Runs on either machine: exact and int8 products of a seeded layer, as a digest of the output
  // bits, and the worst error against float64 in units of 2^-24 * sum |x w| (exact mode).
  const { Int4Linear } = await import(join(root, 'dist/index.js'));
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const results = [];
  for (const [inF, outF, group] of [[384, 40, 128], [256, 24, 64]]) {
    const groups = inF / group;
    const q = Uint8Array.from({ length: outF * inF }, () => Math.floor(rnd() * 16));
    const zeros = Uint8Array.from({ length: outF * groups }, () => Math.floor(rnd() * 16));
    // multiples of 2^-10 below 1: exact in fp16, so the layer's fp16 scales are these values
    const scales = Float32Array.from({ length: outF * groups }, () => (1 + Math.floor(rnd() * 1000)) / 1024);
    const layer = await Int4Linear.fromQuantized({ q, zeros, scales, inFeatures: inF, outFeatures: outF, groupSize: group });
    for (const m of [1, 3, 20, 70]) {
      const x = Float32Array.from({ length: m * inF }, (_, i) => (rnd() - 0.5) * (i % 97 === 0 ? 300 : 2));
      for (const mode of group % 128 === 0 ? ['exact', 'int8'] : ['exact']) {
        const y = await layer.forward(x, m, { mode });
        let worst = 0;
        if (mode === 'exact') {
          for (let r = 0; r < m; r++)
            for (let o = 0; o < outF; o++) {
              let ref = 0, mag = 0;
              for (let k = 0; k < inF; k++) {
                const g = o * groups + Math.floor(k / group);
                const w = (q[o * inF + k] - zeros[g]) * scales[g];
                ref += x[r * inF + k] * w;
                mag += Math.abs(x[r * inF + k] * w);
              }
              worst = Math.max(worst, Math.abs(y[r * outF + o] - ref) / (mag * 2 ** -24));
            }
        }
        const digest = createHash('sha256').update(new Uint8Array(y.buffer, y.byteOffset, y.byteLength)).digest('hex');
        // sum |x| |w| per output: the scale of the int8 comparison
        const mag = Array.from({ length: m * outF }, (_, i) => {
          const r = Math.floor(i / outF), o = i % outF;
          let t = 0;
          for (let k = 0; k < inF; k++) t += Math.abs(x[r * inF + k] * (q[o * inF + k] - zeros[o * groups + Math.floor(k / group)]) * scales[o * groups + Math.floor(k / group)]);
          return t;
        });
        results.push({ shape: `${inF}x${outF} g${group}`, m, mode, digest, worst, y: Array.from(y), mag });
      }
    }
  }
  // process.exit right after a large write to a pipe would cut it short: wait for the flush
  await new Promise((done) => process.stdout.write(`${JSON.stringify(results)}\n`, done));
  process.exit(0);
}

const armCommand = (process.env.AWQ_ARM64_NODE ?? '').split(' ').filter(Boolean);
if (armCommand.length === 0 || !process.env.AWQ_NATIVE_BINARY) {
  console.error('AWQ_ARM64_NODE and AWQ_NATIVE_BINARY must be set (scripts/check-arm64.sh sets them)');
  process.exit(2);
}
const armEnv = { ...process.env, AWQ_THREADS: '2' };
const armPortableEnv = { ...armEnv, AWQ_ISA: 'portable' };
const hostEnv = { ...process.env, AWQ_ISA: 'portable', AWQ_THREADS: '2' };
delete hostEnv.AWQ_NATIVE_BINARY;

// onArm: false (this Node, portable kernels), true (arm64, NEON kernels) or 'portable' (arm64, portable kernels)
function run(onArm, args) {
  const [cmd, ...pre] = onArm ? armCommand : [process.execPath];
  const env = onArm === 'portable' ? armPortableEnv : onArm ? armEnv : hostEnv;
  const r = spawnSync(cmd, [...pre, ...args], { cwd: root, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${onArm ? 'arm64' : 'x86-64'}: ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

let passed = 0, failed = 0, skipped = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    const skip = await fn();
    if (typeof skip === 'string') {
      skipped++;
      console.log(`SKIP ${name} (${skip})`);
    } else {
      passed++;
      console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err.message}`);
  }
}
function expect(cond, what) {
  if (!cond) throw new Error(what);
}

await check('doctor: Node runs as arm64 with the NEON kernels (portable under AWQ_ISA=portable)', () => {
  const d = JSON.parse(run(true, [cli, 'doctor', '--json']));
  expect(d.cpu.isa === 'neon', `isa ${d.cpu.isa}`);
  expect(/\bneon\b/.test(d.cpu.features), `features "${d.cpu.features}"`);
  expect(JSON.parse(run('portable', [cli, 'doctor', '--json'])).cpu.isa === 'portable', 'AWQ_ISA=portable ignored');
  expect(/arm64/.test(run(true, ['-p', 'process.arch'])), 'process.arch is not arm64');
});

const int4Host = JSON.parse(run(false, [fileURLToPath(import.meta.url), '--int4']));

await check('int4 products, portable kernels: bit-identical to x86-64, within 64 units of float64', () => {
  const arm = JSON.parse(run('portable', [fileURLToPath(import.meta.url), '--int4']));
  expect(arm.length === int4Host.length && arm.length > 0, 'different numbers of results');
  arm.forEach((a, i) => {
    const what = `${a.shape} m ${a.m} ${a.mode}`;
    expect(a.digest === int4Host[i].digest, `${what}: arm64 and x86-64 outputs differ`);
    expect(a.worst <= 64, `${what}: ${a.worst.toFixed(1)} units from float64`);
  });
});

await check('int4 products, NEON kernels: exact within 64 units of float64, int8 = portable int8 to 1e-6 of sum |x w|', () => {
  const arm = JSON.parse(run(true, [fileURLToPath(import.meta.url), '--int4']));
  expect(arm.length === int4Host.length && arm.length > 0, 'different numbers of results');
  arm.forEach((a, i) => {
    const what = `${a.shape} m ${a.m} ${a.mode}`;
    if (a.mode === 'exact') expect(a.worst <= 64, `${what}: ${a.worst.toFixed(1)} units from float64`);
    else {
      // the same integer products; only the fp32 scaling differs in order
      a.y.forEach((v, j) => {
        const d = Math.abs(v - int4Host[i].y[j]);
        expect(d <= 1e-6 * a.mag[j], `${what}: output ${j} is ${v} against ${int4Host[i].y[j]}`);
      });
    }
  });
});

const model = join(shared, 'models/llama-22m');
const awqModel = join(shared, 'models/llama-22m-awq');
const text = join(shared, 'data/eval.txt');
const noShared = existsSync(model) && existsSync(awqModel) ? null : `no ${shared}/models: the test models are not here`;

await check('awq eval of the independent AWQ checkpoint (1 window of 128): arm64 = x86-64 to 1e-6 (portable), 1e-5 (NEON)', () => {
  if (noShared) return noShared;
  const args = [cli, 'eval', awqModel, '--text', text, '--windows', '1', '--seqlen', '128', '--json'];
  const host = JSON.parse(run(false, args));
  for (const [kernels, tol] of [['portable', 1e-6], [true, 1e-5]]) {
    const arm = JSON.parse(run(kernels, args));
    const rel = Math.abs(arm.perplexity - host.perplexity) / host.perplexity;
    expect(rel < tol, `${kernels === true ? 'NEON' : 'portable'}: perplexity ${arm.perplexity} on arm64, ${host.perplexity} on x86-64 (relative ${rel})`);
  }
});

await check('awq quantize --method rtn: the same checkpoint bytes on arm64 and x86-64', () => {
  if (noShared) return noShared;
  const dir = mkdtempSync(join(tmpdir(), 'awq-arm64-'));
  try {
    const digest = (out) => createHash('sha256').update(readFileSync(join(out, 'model.safetensors'))).digest('hex');
    run(true, [cli, 'quantize', model, '--out', join(dir, 'arm'), '--method', 'rtn', '--quiet']);
    run(false, [cli, 'quantize', model, '--out', join(dir, 'host'), '--method', 'rtn', '--quiet']);
    expect(digest(join(dir, 'arm')) === digest(join(dir, 'host')), 'model.safetensors differs');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

console.log(`smoke: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
