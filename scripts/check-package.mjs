#!/usr/bin/env node
// `npm run test:package`: what a project that depends on awq from npm gets. Packs this checkout
// (`npm pack`), installs the tarball into an empty project (its install script builds the CPU
// addon with node-gyp, against npm's nodedir, offline), and checks from there:
//   - the tarball holds what the package needs at run time, and none of the repository's tests,
//     builds or GPU payloads;
//   - `import ... from 'awq'` loads the installed addon and an int4 product matches a float64
//     reference;
//   - the shipped default calibration set is where the library looks for it;
//   - without its addon, the load error says `npm rebuild awq`, and that rebuilds it;
//   - `awq --version` and `awq doctor --json` run from node_modules/.bin;
//   - TypeScript (strict, NodeNext) type-checks a consumer file and the README's ts examples
//     against the shipped .d.ts, and CommonJS code loads the package with require();
//   - where nvcc is installed, `npm run build:cuda` inside the installed package (sm_90 only, to
//     keep it short) builds a CUDA addon that the library then finds.
// Prints one line per check and "package: N passed, N failed, N skipped" (CI counts it).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'awq-package-'));
const consumer = join(work, 'consumer');
let passed = 0;
let failed = 0;
let skipped = 0;
let packedFiles = [];

function check(name, fn) {
  try {
    const detail = fn();
    passed++;
    console.log(`ok   ${name}${detail ? `: ${detail}` : ''}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${(err.stderr?.toString() || err.message).trim().split('\n').slice(-15).join('\n     ')}`);
  }
}

function sh(cmd, args, cwd) {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

let installed = false;
check('npm pack, then npm install of the tarball into an empty project', () => {
  // From the first '[': some npm versions print the prepare script's banner on stdout too.
  const packOut = sh('npm', ['pack', '--json', '--pack-destination', work], root);
  const packed = JSON.parse(packOut.slice(packOut.indexOf('[')));
  const tarball = join(work, packed[0].filename);
  packedFiles = packed[0].files.map((f) => f.path);
  sh('mkdir', ['-p', consumer]);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const t0 = Date.now();
  sh('npm', ['install', '--no-audit', '--no-fund', tarball], consumer);
  installed = true;
  return `${packedFiles.length} files, ${(packed[0].size / 1e6).toFixed(2)} MB packed; install with the addon build ${((Date.now() - t0) / 1000).toFixed(0)} s`;
});

check('the tarball holds the run-time files and no tests, builds or GPU payloads', () => {
  const files = packedFiles;
  for (const need of ['LICENSE', 'README.md', 'package.json', 'binding.gyp', 'CMakeLists.txt', 'scripts/build-cuda.mjs',
    'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'data/calib-default.jsonl', 'native/addon/main.cc']) {
    expect(files.includes(need), `missing ${need}`);
  }
  const stray = files.filter((f) => /^(test|\.gpu|\.ci|benchmarks|build[^/]*|node_modules|test-results)\//.test(f));
  expect(stray.length === 0, `should not ship: ${stray.slice(0, 5).join(', ')}`);
  expect(files.some((f) => f.startsWith('native/cuda/')), 'native/cuda missing (build:cuda needs it)');
});

const run = (args) => sh(process.execPath, args, consumer);

check("import from 'awq': an int4 product through the installed addon against float64", () => {
  expect(installed, 'not installed');
  writeFileSync(join(consumer, 'product.mjs'), `
import { Int4Linear, backends, defaultCalibrationPath } from 'awq';
import { existsSync } from 'node:fs';
const inF = 256, outF = 24, group = 128, m = 3;
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
const q = Uint8Array.from({ length: outF * inF }, () => Math.floor(rand() * 16));
const zeros = Uint8Array.from({ length: outF * (inF / group) }, () => Math.floor(rand() * 16));
const scales = Float32Array.from({ length: outF * (inF / group) }, () => (1 + Math.floor(rand() * 64)) / 1024);
const x = Float32Array.from({ length: m * inF }, () => rand() * 2 - 1);
const layer = await Int4Linear.fromQuantized({ q, zeros, scales, outFeatures: outF, inFeatures: inF, groupSize: group });
const y = await layer.forward(x, m);
let worst = 0;
for (let i = 0; i < m; i++) for (let o = 0; o < outF; o++) {
  let ref = 0;
  for (let k = 0; k < inF; k++) {
    const g = o * (inF / group) + Math.floor(k / group);
    ref += x[i * inF + k] * (q[o * inF + k] - zeros[g]) * scales[g];
  }
  worst = Math.max(worst, Math.abs(y[i * outF + o] - ref) / (Math.abs(ref) + 1e-3));
}
await layer.dispose();
console.log(JSON.stringify({ worst, binary: backends().binary, calib: existsSync(defaultCalibrationPath) && defaultCalibrationPath }));
`);
  const r = JSON.parse(run(['product.mjs']));
  expect(r.worst < 1e-4, `relative error ${r.worst}`);
  expect(r.binary.startsWith(join(consumer, 'node_modules', 'awq')), `addon loaded from ${r.binary}, not the installed package`);
  expect(r.calib && r.calib.startsWith(join(consumer, 'node_modules', 'awq', 'data')), `default calibration set not found (${r.calib})`);
  return `max relative error ${r.worst.toExponential(1)}, addon ${r.binary.slice(consumer.length + 1)}`;
});

check('with its addon gone, the error says how to rebuild it, and `npm rebuild awq` does', () => {
  expect(installed, 'not installed');
  const addon = join(consumer, 'node_modules', 'awq', 'build', 'Release', 'awq.node');
  renameSync(addon, `${addon}.away`);
  writeFileSync(join(consumer, 'missing.mjs'), `
import { backends, NativeLoadError } from 'awq';
try { backends(); console.log('loaded'); } catch (e) { console.log(e instanceof NativeLoadError ? e.message : 'other: ' + e); }
`);
  const message = run(['missing.mjs']);
  expect(/npm rebuild awq/.test(message), `the load error does not say how to rebuild: ${message}`);
  sh('npm', ['rebuild', 'awq'], consumer);
  expect(existsSync(addon), 'npm rebuild awq built no addon');
  expect(JSON.parse(run(['product.mjs'])).worst < 1e-4, 'the rebuilt addon gives a wrong product');
});

check('awq --version and awq doctor --json from node_modules/.bin', () => {
  expect(installed, 'not installed');
  const bin = join(consumer, 'node_modules', '.bin', 'awq');
  const version = sh(bin, ['--version'], consumer).trim();
  const pkgVersion = JSON.parse(sh('npm', ['pkg', 'get', 'version'], root));
  expect(version === pkgVersion, `--version printed ${version}, package.json has ${pkgVersion}`);
  const doctor = JSON.parse(sh(bin, ['doctor', '--json'], consumer));
  expect(typeof doctor === 'object' && doctor !== null, 'doctor --json printed no object');
  return `version ${version}`;
});

check('a TypeScript consumer (strict, NodeNext) type-checks against the shipped .d.ts', () => {
  expect(installed, 'not installed');
  writeFileSync(join(consumer, 'consumer.ts'), `
import { Int4Linear, AwqError, evaluate, quantize, type QuantizeOptions, type EvaluateResult } from 'awq';
export async function run(layer: Int4Linear, x: Float32Array): Promise<number> {
  const y: Float32Array = await layer.forward(x, 1, { mode: 'exact' });
  return y.length + layer.outFeatures;
}
export const options: Partial<QuantizeOptions> = {};
export type R = EvaluateResult;
export const f = [quantize, evaluate];
export const isAwq = (e: unknown): boolean => e instanceof AwqError;
`);
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  run([tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
    '--typeRoots', join(root, 'node_modules', '@types'), '--types', 'node', 'consumer.ts']);
});

check("the README's TypeScript examples type-check against the shipped .d.ts", () => {
  expect(installed, 'not installed');
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((m) => m[1]);
  expect(blocks.length > 0, 'no ```ts block in README.md');
  const files = blocks.map((code, i) => {
    const file = `readme-example-${i + 1}.ts`;
    writeFileSync(join(consumer, file), `${code}export {};\n`);
    return file;
  });
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  run([tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
    '--typeRoots', join(root, 'node_modules', '@types'), '--types', 'node', ...files]);
  return `${blocks.length} blocks`;
});

check("without CUDA, asking for it names the build command that works in a dependent project", () => {
  expect(installed, 'not installed');
  writeFileSync(join(consumer, 'no-cuda.mjs'), `
import { resolveBackend, backends } from 'awq';
if (backends().cuda) { console.log('has cuda'); process.exit(0); }
try { resolveBackend('cuda', 'fp32'); console.log('no error'); } catch (e) { console.log(e.message); }
`);
  const printed = run(['no-cuda.mjs']).trim();
  if (printed === 'has cuda') return 'skipped: a CUDA build is present';
  const installedAt = join(consumer, 'node_modules', 'awq');
  expect(printed.includes(`\`cd ${JSON.stringify(installedAt)} && npm run build:cuda\``), `message: ${printed}`);
});

const [nodeMajor, nodeMinor] = process.versions.node.split('.').map(Number);
if (!(nodeMajor > 22 || (nodeMajor === 22 && nodeMinor >= 12) || (nodeMajor === 20 && nodeMinor >= 19))) {
  skipped++;
  console.log(`skip require('awq') from CommonJS: Node ${process.versions.node} cannot require ES modules (20.19+, 22.12+ can)`);
} else {
  check("CommonJS: require('awq') (Node loads ES modules from require)", () => {
    expect(installed, 'not installed');
    writeFileSync(join(consumer, 'cjs.cjs'), `
const { Int4Linear, version, backends } = require('awq');
if (typeof Int4Linear.fromQuantized !== 'function' || typeof backends().cpu.isa !== 'string') throw new Error('incomplete exports');
console.log(version);
`);
    const printed = run(['cjs.cjs']).trim();
    expect(printed === JSON.parse(sh('npm', ['pkg', 'get', 'version'], root)), `printed ${printed}`);
  });
}

const hasNvcc = (() => {
  try {
    sh(process.env.CUDACXX || 'nvcc', ['--version'], root);
    return true;
  } catch {
    return false;
  }
})();
if (!hasNvcc) {
  skipped++;
  console.log('skip npm run build:cuda in the installed package: nvcc not found');
} else {
  check('npm run build:cuda inside the installed package, and the library finds that build', () => {
    expect(installed, 'not installed');
    const pkgDir = join(consumer, 'node_modules', 'awq');
    const t0 = Date.now();
    sh('npm', ['run', 'build:cuda', '--', '--archs', '90'], pkgDir);
    const seconds = ((Date.now() - t0) / 1000).toFixed(0);
    const doctor = JSON.parse(sh(join(consumer, 'node_modules', '.bin', 'awq'), ['doctor', '--json'], consumer));
    // With a device the CUDA build is in use; without one it loads and says no device answered.
    const found = doctor.cuda !== null ? doctor.binary.startsWith(join(pkgDir, 'build-cuda')) : /CUDA build loads/.test(doctor.cudaUnavailable);
    expect(found, `doctor does not see the CUDA build: ${JSON.stringify({ binary: doctor.binary, cuda: doctor.cuda, why: doctor.cudaUnavailable })}`);
    return `built in ${seconds} s; ${doctor.cuda ? 'in use' : doctor.cudaUnavailable}`;
  });
}

rmSync(work, { recursive: true, force: true });
console.log(`package: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
