#!/usr/bin/env node
// Safetensors read throughput against `cat file > /dev/null`, both measured in this run on the
// same generated file (~2 GB in the temp folder, deleted at the end).
//
// Both are measured with the file in the page cache (warm): dropping caches needs root, so a
// cold-disk figure would compare whatever the kernel happened to keep. `cat` is the ceiling for
// a copy out of the page cache by one process; readRaw does the same copy into a fresh
// ArrayBuffer per tensor, readF32 also widens bf16 to fp32 (twice the bytes written).
// A second baseline, "allocate + fill", writes the same bytes into fresh ArrayBuffers without
// reading anything: the cost of faulting in new memory, which bounds any read that returns a new
// buffer per tensor (cat reuses one small buffer that stays in cache).
//
//   node benchmarks/read-throughput.mjs [--gb 2] [--repeats 3] [--json]
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';

import { backends, SafetensorsFile, SafetensorsWriter } from '../dist/index.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const gb = opt('--gb', 2);
const repeats = opt('--repeats', 3);
const json = args.includes('--json');
const log = (s) => { if (!json) process.stderr.write(`${s}\n`); };

const tensorBytes = 256 << 20;
const count = Math.max(1, Math.round((gb * 1e9) / tensorBytes));
const dir = join(tmpdir(), `awq-read-bench-${process.pid}`);
const cleanup = () => rmSync(dir, { recursive: true, force: true });
process.on('SIGINT', () => { cleanup(); process.exit(130); });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  // --- generate: count bf16 tensors of 256 MiB with a cheap non-constant pattern
  log(`writing ${count} x 256 MiB bf16 tensors to ${dir} ...`);
  const t0 = performance.now();
  const w = await SafetensorsWriter.create(dir, { maxShardBytes: 1e12 });
  const data = new Uint16Array(tensorBytes / 2);
  for (let i = 0; i < data.length; i++) data[i] = 0x3c00 + (i % 977);
  for (let k = 0; k < count; k++) {
    data[0] = k;
    await w.add(`layers.${k}.weight`, 'BF16', [tensorBytes / 2 / 4096, 4096], data);
  }
  const { shards, totalSize } = await w.finish();
  const writeS = (performance.now() - t0) / 1000;
  const file = join(dir, shards[0]);

  const catOnce = () => {
    const t = performance.now();
    const r = spawnSync('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file]);
    if (r.status !== 0) throw new Error(`cat failed: ${r.stderr}`);
    return (performance.now() - t) / 1000;
  };
  const readAll = async (how) => {
    const f = await SafetensorsFile.open(file);
    const t = performance.now();
    for (const name of f.tensors.keys()) {
      const x = how === 'raw' ? await f.readRaw(name) : await f.readF32(name);
      if (x.length === 0) throw new Error('empty');
    }
    const s = (performance.now() - t) / 1000;
    await f.close();
    return s;
  };

  catOnce(); // warm the page cache
  await readAll('raw'); // and the allocator
  const fillOnce = () => {
    const t = performance.now();
    for (let k = 0; k < count; k++) new Uint8Array(tensorBytes).fill(k + 1);
    return (performance.now() - t) / 1000;
  };
  const times = { cat: [], fill: [], readRaw: [], readF32: [] };
  for (let r = 0; r < repeats; r++) {
    times.cat.push(catOnce());
    times.fill.push(fillOnce());
    times.readRaw.push(await readAll('raw'));
    times.readF32.push(await readAll('f32'));
    log(`repeat ${r + 1}/${repeats}: cat ${times.cat.at(-1).toFixed(3)} s, fill ${times.fill.at(-1).toFixed(3)} s, readRaw ${times.readRaw.at(-1).toFixed(3)} s, readF32 ${times.readF32.at(-1).toFixed(3)} s`);
  }
  const gbps = (s) => totalSize / 1e9 / s;
  const catGBs = gbps(median(times.cat));
  const rows = [
    { method: 'cat file > /dev/null (baseline)', seconds: median(times.cat), gbPerS: catGBs, vsCat: 1 },
    { method: 'allocate + fill fresh buffers (no read)', seconds: median(times.fill), gbPerS: gbps(median(times.fill)), vsCat: gbps(median(times.fill)) / catGBs },
    { method: 'SafetensorsFile.readRaw (all tensors)', seconds: median(times.readRaw), gbPerS: gbps(median(times.readRaw)), vsCat: gbps(median(times.readRaw)) / catGBs },
    { method: 'SafetensorsFile.readF32 (bf16 -> fp32)', seconds: median(times.readF32), gbPerS: gbps(median(times.readF32)), vsCat: gbps(median(times.readF32)) / catGBs },
  ];
  const b = backends();
  const result = {
    benchmark: 'read-throughput',
    machine: `${cpus()[0]?.model ?? 'cpu'}, ${b.cpu.threads} threads`,
    cache: 'warm (file in page cache for every method; caches cannot be dropped without root)',
    fileBytes: totalSize,
    tensors: count,
    repeats,
    writeSeconds: writeS,
    writeGBPerS: totalSize / 1e9 / writeS,
    results: rows,
    timesSeconds: times,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } else {
    console.log(`\nread throughput, ${(totalSize / 1e9).toFixed(2)} GB file, ${result.machine}, median of ${repeats}, ${result.cache}`);
    console.log(`${'method'.padEnd(42)} ${'seconds'.padStart(8)} ${'GB/s'.padStart(7)} ${'vs cat'.padStart(7)}`);
    for (const r of rows) console.log(`${r.method.padEnd(42)} ${r.seconds.toFixed(3).padStart(8)} ${r.gbPerS.toFixed(2).padStart(7)} ${r.vsCat.toFixed(2).padStart(7)}`);
    console.log(`(generation with SafetensorsWriter: ${writeS.toFixed(1)} s, ${result.writeGBPerS.toFixed(2)} GB/s including the shard copy)`);
  }
} finally {
  cleanup();
}
