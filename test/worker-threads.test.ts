/**
 * awq inside worker_threads, as serving pools run it: a worker that is terminated, or exits, while
 * its native calls are in flight goes away alone. (Settling their promises in the dying worker used
 * to throw out of the completion callback and abort the whole process.)
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { scratchDir } from './helpers/scratch.js';

const index = resolve('dist/index.js');

/** Script text defining `startLayer(onPhase)`: the quantization of a random 512-wide decoder layer (seconds here), started. */
const startLayer = `
const startLayer = async (onPhase) => {
  const { quantizeDecoderLayer } = await import(${JSON.stringify(index)});
  let s = 1;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const H = 512, I = 1536, nh = 8, nkv = 2, hd = 64;
  const arr = (n, scale, offset = 0) => Float32Array.from({ length: n }, () => offset + (rand() - 0.5) * 2 * scale);
  const sc = 1 / Math.sqrt(H);
  const arch = { hiddenSize: H, intermediateSize: I, numHeads: nh, numKvHeads: nkv, headDim: hd, rmsNormEps: 1e-5,
    ropeInvFreq: Float32Array.from({ length: hd / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / hd)), qkNorm: false };
  const weights = { inputNorm: arr(H, 0.5, 1), postNorm: arr(H, 0.5, 1), q: arr(nh * hd * H, 2 * sc), k: arr(nkv * hd * H, 2 * sc),
    v: arr(nkv * hd * H, sc), o: arr(H * nh * hd, sc), gate: arr(I * H, sc), up: arr(I * H, sc), down: arr(H * I, sc) };
  const options = { wBit: 4, groupSize: 128, zeroPoint: true, duoScaling: true, clip: true, method: 'awq' };
  return { done: quantizeDecoderLayer(arch, weights, arr(4 * 256 * H, 1), 256, options, { onPhase }) };
};`;

/** A script whose worker starts `start` (no await) and then does `then` ('terminate' from the main thread, or 'exit'). */
function script(start: string, then: 'terminate' | 'exit'): string {
  return `
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
if (isMainThread) {
  const w = new Worker(new URL(import.meta.url));
  w.on('message', () => ${then === 'terminate' ? 'w.terminate()' : 'undefined'});
  w.on('exit', (code) => { setTimeout(() => console.log('main alive after worker exit ' + code), 200); });
} else {
  const { Int4Linear } = await import(${JSON.stringify(index)});
  const inF = 2048, outF = 2048, g = 128;
  const t = { name: 'w', inFeatures: inF, outFeatures: outF, groupSize: g,
    qweight: new Int32Array(inF * outF / 8).fill(0x12345678), qzeros: new Int32Array(inF / g * outF / 8).fill(0x88888888),
    scales: new Uint16Array(inF / g * outF).fill(0x2000) };
  ${start}
  ${then === 'terminate' ? "parentPort.postMessage('started');" : 'process.exit(3);'}
}
`;
}

const cases: [string, string, 'terminate' | 'exit'][] = [
  ['terminated during forward calls', 'const l = await Int4Linear.fromAwq(t); for (let i = 0; i < 8; i++) l.forward(new Float32Array(128 * inF).fill(0.5), 128);', 'terminate'],
  ['terminated while a layer is being packed', 'Int4Linear.fromAwq(t); Int4Linear.fromAwq(t);', 'terminate'],
  ['exiting (process.exit in the worker) during forward calls', 'const l = await Int4Linear.fromAwq(t); for (let i = 0; i < 8; i++) l.forward(new Float32Array(128 * inF), 128);', 'exit'],
];

describe('worker threads', () => {
  for (const [name, start, then] of cases) {
    it(`a worker ${name} ends alone; the process lives on`, () => {
      const file = join(scratchDir('awq-worker-'), 'run.mjs');
      writeFileSync(file, script(start, then));
      for (let round = 0; round < 3; round++) {
        const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, AWQ_THREADS: '2' } });
        expect(r.stderr).not.toMatch(/terminate called|Napi::Error/);
        expect(r.signal, r.stderr).toBeNull();
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/main alive after worker exit \d+/);
      }
    });
  }

  it('workers terminated while they keep calling forward or forwardSync end alone (40 times each)', () => {
    // Calls made while the worker's environment shuts down: creating the promise's error stack
    // there was a fatal N-API error, and an exception thrown into it std::terminate.
    const file = join(scratchDir('awq-worker-'), 'loop.mjs');
    writeFileSync(file, `
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
if (isMainThread) {
  for (const mode of ['async', 'sync']) {
    for (let i = 0; i < 40; i++) {
      const w = new Worker(new URL(import.meta.url), { workerData: mode });
      await new Promise((r) => w.once('message', r));
      await new Promise((r) => setTimeout(r, (i * 7) % 23));
      await w.terminate();
    }
  }
  console.log('main alive after 80 terminations');
} else {
  const { Int4Linear } = await import(${JSON.stringify(index)});
  const inF = 512, outF = 512, g = 128;
  const l = await Int4Linear.fromAwq({ name: 'w', inFeatures: inF, outFeatures: outF, groupSize: g,
    qweight: new Int32Array(inF * outF / 8).fill(0x12345678), qzeros: new Int32Array(inF / g * outF / 8).fill(0x88888888),
    scales: new Uint16Array(inF / g * outF).fill(0x2000) });
  const x = new Float32Array(inF).fill(0.5);
  parentPort.postMessage('ready');
  for (let i = 0; ; i++) {
    if (workerData === 'sync') l.forwardSync(x, 1);
    else l.forward(x, 1); // not awaited: a server firing calls
    if (i % 64 === 0) await new Promise((r) => setImmediate(r));
  }
}
`);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, AWQ_THREADS: '2' } });
    expect(r.stderr).not.toMatch(/terminate called|FATAL ERROR|Napi::Error/);
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/main alive after 80 terminations/);
  });
});

describe('native jobs and the libuv pool', () => {
  it("queued native calls leave libuv's threads to fs and crypto", () => {
    // Native calls used to run on libuv's 4 threads: 8 queued products held all four, and a file
    // read or a pbkdf2 of the same process waited for the first product to finish.
    const file = join(scratchDir('awq-jobs-'), 'jobs.mjs');
    writeFileSync(file, `
import { readFile } from 'node:fs/promises';
import { pbkdf2 } from 'node:crypto';
const { denseGemm } = await import(${JSON.stringify(index)});
const n = 1536, a = new Float32Array(n * n).fill(0.5), b = new Float32Array(n * n).fill(0.25);
const order = [];
const done = [];
for (let i = 0; i < 8; i++) done.push(denseGemm({ a, b, m: n, n, k: n }).then((c) => order.push('gemm ' + c[0])));
done.push(readFile(${JSON.stringify(file)}).then(() => order.push('readFile')));
done.push(new Promise((r) => pbkdf2('x', 'y', 1, 32, 'sha256', r)).then(() => order.push('pbkdf2')));
await Promise.all(done);
console.log(JSON.stringify(order));
`);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, AWQ_THREADS: '2' } });
    expect(r.status, r.stderr).toBe(0);
    const order = JSON.parse(r.stdout) as string[];
    expect(order.length, r.stdout).toBe(10);
    expect(order.slice(0, 2).sort(), r.stdout).toEqual(['pbkdf2', 'readFile']);
    expect(order.slice(2), r.stdout).toEqual(Array(8).fill(`gemm ${0.125 * 1536}`));
  });
  it('process.exit() or an uncaught exception while native calls run ends the process with its status', () => {
    // The main thread's exit runs no cleanup hook: a job thread still inside the compute pool when
    // exit destroyed it never returned, and the process hung (12 of 30 runs before the exit handler).
    const file = join(scratchDir('awq-jobs-'), 'exit.mjs');
    writeFileSync(file, `
const { denseGemm } = await import(${JSON.stringify(index)});
const n = Number(process.argv[2]), a = new Float32Array(n * n).fill(0.5), b = new Float32Array(n * n).fill(0.25);
for (let i = 0; i < 4; i++) denseGemm({ a, b, m: n, n, k: n });
if (process.argv[3] === 'throw') throw new Error('thrown while products run');
process.exit(7);
`);
    const runs: [string[], number][] = [...Array(24).fill([['256'], 7]), ...Array(6).fill([['768', 'throw'], 1])];
    for (const [args, status] of runs) {
      const r = spawnSync(process.execPath, [file, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, AWQ_THREADS: '2' } });
      expect(r.signal, `${args.join(' ')}: ${r.stderr}`).toBeNull(); // SIGTERM: it hung until the timeout
      expect(r.status, r.stderr).toBe(status);
    }
  });

  it("worker.terminate() during a layer's quantization stops it at the kernels' next poll, not at the layer's end", () => {
    // Teardown waits for a worker's running calls (their arrays are its memory); it used to wait
    // for the whole layer (6.5 s here), and 1 s more for each progress report nobody could deliver.
    const file = join(scratchDir('awq-jobs-'), 'layer.mjs');
    writeFileSync(file, `
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
if (isMainThread) {
  const run = async (terminate) => {
    const w = new Worker(new URL(import.meta.url), { workerData: terminate });
    const t0 = performance.now();
    await new Promise((r) => w.once('message', r)); // the first phase (terminate) or the result
    const t1 = performance.now();
    await w.terminate();
    return terminate ? performance.now() - t1 : t1 - t0;
  };
  const whole = await run(false);
  const stop = await run(true);
  console.log(JSON.stringify({ whole, stop }));
} else {
  ${startLayer}
  let told = false;
  const onPhase = () => { if (workerData && !told) { told = true; parentPort.postMessage('started'); } };
  const { done } = await startLayer(onPhase);
  if (!workerData) done.then(() => parentPort.postMessage('done'));
}
`);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, AWQ_THREADS: '2' } });
    expect(r.status, r.stderr).toBe(0);
    const { whole, stop } = JSON.parse(r.stdout) as { whole: number; stop: number };
    expect(stop, r.stdout).toBeLessThan(whole / 2);
  });

  it("process.exit() during a layer's quantization on the main thread ends the process at the kernels' next poll", () => {
    // The main thread's exit runs no teardown: the exit handler waited for the whole layer, and 1 s
    // more for each progress report nobody could deliver.
    const file = join(scratchDir('awq-jobs-'), 'exit-layer.mjs');
    writeFileSync(file, `
import { writeSync } from 'node:fs';
${startLayer}
const exit = process.argv[2] === 'exit';
let first = 0;
const onPhase = () => { if (!first) { first = Date.now(); writeSync(1, first + '\\n'); if (exit) process.exit(5); } };
await (await startLayer(onPhase)).done;
writeSync(1, Date.now() + '\\n');
`);
    const run = (mode: string) => spawnSync(process.execPath, [file, mode], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, AWQ_THREADS: '2' } });
    const whole = run('whole');
    expect(whole.status, whole.stderr).toBe(0);
    const [phase, end] = whole.stdout.trim().split('\n').map(Number);
    const exited = run('exit');
    const gone = Date.now();
    expect(exited.status, exited.stderr).toBe(5);
    expect(gone - Number(exited.stdout.trim()), `whole layer ${end - phase} ms`).toBeLessThan((end - phase) / 2);
  });

  it("a terminated worker's calls that have not started are dropped, not run: terminate does not wait behind other threads' calls", () => {
    const file = join(scratchDir('awq-jobs-'), 'drop.mjs');
    writeFileSync(file, `
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
const { denseGemm } = await import(${JSON.stringify(index)});
const n = 2048, a = new Float32Array(n * n).fill(0.5), b = new Float32Array(n * n).fill(0.25);
if (isMainThread) {
  const w = new Worker(new URL(import.meta.url));
  await new Promise((r) => w.once('message', r)); // the worker has loaded awq
  const order = [];
  const main = [];
  for (let i = 0; i < 8; i++) main.push(denseGemm({ a, b, m: n, n, k: n }).then((c) => order.push('gemm ' + c[0])));
  w.postMessage('queue');
  await new Promise((r) => w.once('message', r));
  await w.terminate();
  order.push('terminated');
  await Promise.all(main);
  console.log(JSON.stringify(order));
} else {
  parentPort.once('message', () => {
    for (let i = 0; i < 10; i++) denseGemm({ a, b, m: n, n, k: n }); // queued behind the main thread's
    parentPort.postMessage('queued');
  });
  parentPort.postMessage('ready');
}
`);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, AWQ_THREADS: '2' } });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout), r.stdout).toEqual(['terminated', ...Array(8).fill(`gemm ${0.125 * 2048}`)]);
  });
});

describe('memory', () => {
  it.skipIf(process.platform !== 'linux')('layers freed (dispose) give their memory back to the system, not to the allocator', () => {
    // dispose used to leave the weights to the garbage collector, and glibc keeps freed heap blocks
    // below its adaptive mmap threshold (up to 32 MiB): a server that swapped models held about a
    // model's weights in RSS for good. Measured across dispose alone (no JS allocation between),
    // so what the heap keeps of the JS-side copies made while building does not count.
    const file = join(scratchDir('awq-rss-'), 'rss.mjs');
    writeFileSync(file, `
const { Int4Linear } = await import(${JSON.stringify(index)});
const inF = 2048, outF = 2048, g = 128;
const t = { name: 'w', inFeatures: inF, outFeatures: outF, groupSize: g,
  qweight: new Int32Array(inF * outF / 8).fill(0x12345678), qzeros: new Int32Array(inF / g * outF / 8).fill(0x88888888),
  scales: new Uint16Array(inF / g * outF).fill(0x2000) };
const rss = () => process.memoryUsage().rss / 2 ** 20;
const rounds = [];
for (let round = 0; round < 3; round++) {
  const layers = [];
  for (let i = 0; i < 24; i++) layers.push(await Int4Linear.fromAwq(t));
  const x = new Float32Array(inF).fill(1);
  for (const l of layers) l.forwardSync(x, 1); // every page touched
  const nativeMiB = layers.reduce((n, l) => n + l.nativeBytes, 0) / 2 ** 20;
  gc();
  const before = rss();
  for (const l of layers) await l.dispose();
  rounds.push({ nativeMiB, freedMiB: before - rss() });
}
console.log(JSON.stringify(rounds));
`);
    const r = spawnSync(process.execPath, ['--expose-gc', file], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const rounds = JSON.parse(r.stdout) as { nativeMiB: number; freedMiB: number }[];
    for (const { nativeMiB, freedMiB } of rounds) {
      expect(nativeMiB, r.stdout).toBeGreaterThan(40); // 24 layers of 2 MiB of packed weights
      expect(freedMiB, r.stdout).toBeGreaterThan(0.75 * nativeMiB);
    }
  });
});
