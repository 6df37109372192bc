/**
 * `quantize({ resume: true })` / `awq quantize --resume`: a run that stops keeps its finished
 * layers in `<out>.resume/`, the next run continues after them and writes the same checkpoint as
 * an uninterrupted run; a different run, a damaged folder and a live lock are refused.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import {
  AbortedError,
  BadCheckpointError,
  InvalidArgumentError,
  keptProgress,
  quantize,
  resumeDirFor,
  type QuantizeOptions,
} from '../dist/index.js';
import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const cli = resolve('dist/cli/main.js');
const samples = (n: number) =>
  Array.from({ length: n }, (_, s) => Array.from({ length: 128 }, (_, i) => (s * 977 + i * 31 + 5) % 8000));

/** Every file of a checkpoint folder but the report (which holds timings), as digests of its bytes. */
function checkpointFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const f of readdirSync(dir).sort()) {
    if (f !== 'awq-report.json') files.set(f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex'));
  }
  return files;
}

/** Runs quantize with an abort once layer `stopAfter` has been kept. */
async function runStoppingAfter(o: QuantizeOptions, stopAfter: number) {
  const controller = new AbortController();
  return quantize({
    ...o,
    resume: true,
    signal: controller.signal,
    onProgress: (e) => {
      if (e.stage === 'layer' && e.layer === stopAfter && e.phase === 'done') controller.abort();
    },
  }).catch((e: unknown) => e);
}

describe('quantize --resume', () => {
  it('a run stopped after its checkpoint was in place, before removing its folder: the same command again finishes', async () => {
    const model = await writeTinyModel({ layers: 2 });
    const dir = scratchDir('awq-resume-done-');
    const base: QuantizeOptions = { model, out: join(dir, 'q'), calib: { kind: 'tokens', samples: samples(4) }, seqlen: 128, resume: true };
    // every layer kept, stopped before the checkpoint was written; a copy of that folder
    expect(await runStoppingAfter(base, 1)).toBeInstanceOf(AbortedError);
    const keptCopy = join(dir, 'kept-copy');
    cpSync(resumeDirFor(base.out), keptCopy, { recursive: true });
    await quantize(base);
    expect(existsSync(resumeDirFor(base.out))).toBe(false);
    const written = JSON.parse(readFileSync(join(base.out, 'awq-report.json'), 'utf8'));

    // as a SIGKILL between the commit and the clean-up leaves it: the checkpoint and the folder
    cpSync(keptCopy, resumeDirFor(base.out), { recursive: true });
    const messages: string[] = [];
    const again = await quantize({ ...base, onProgress: (e) => e.message && messages.push(e.message) });
    expect(again.report).toEqual(written);
    expect(messages).toContain(`${base.out} was already complete; removed the ${base.out}.resume it left`);
    expect(existsSync(resumeDirFor(base.out))).toBe(false);

    // the same folders, and a run with other settings or calibration: not that run, so the
    // checkpoint is an existing output, and both folders stay as they are
    cpSync(keptCopy, resumeDirFor(base.out), { recursive: true });
    const keptState = readFileSync(join(resumeDirFor(base.out), 'state.json'), 'utf8');
    const reportText = readFileSync(join(base.out, 'awq-report.json'), 'utf8');
    for (const other of [
      { wBit: 3 },
      { groupSize: 64 },
      { zeroPoint: false },
      { method: 'rtn' as const },
      { calib: { kind: 'tokens' as const, samples: samples(3) } },
    ]) {
      const err = await quantize({ ...base, ...other }).catch((e: unknown) => e);
      expect(err, JSON.stringify(other)).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(/already exists/);
      expect(readFileSync(join(resumeDirFor(base.out), 'state.json'), 'utf8')).toBe(keptState);
      expect(readFileSync(join(base.out, 'awq-report.json'), 'utf8')).toBe(reportText);
      expect(existsSync(join(resumeDirFor(base.out), 'lock'))).toBe(false);
    }
    // a listener that throws at the shortcut's event fails it, and leaves both folders
    const thrown = await quantize({ ...base, onProgress: (e) => { if (e.stage === 'done') throw new Error('listener'); } }).catch((e: unknown) => e);
    expect((thrown as Error).message).toBe('listener');
    expect(readFileSync(join(resumeDirFor(base.out), 'state.json'), 'utf8')).toBe(keptState);
    expect(existsSync(join(resumeDirFor(base.out), 'lock'))).toBe(false);
    // and the same settings again: still recognized
    expect((await quantize(base)).report).toEqual(written);
    expect(existsSync(resumeDirFor(base.out))).toBe(false);

    // a kept folder whose reports are not the checkpoint's (another run) is still refused, and kept
    cpSync(keptCopy, resumeDirFor(base.out), { recursive: true });
    const statePath = join(resumeDirFor(base.out), 'state.json');
    const state = JSON.parse(readFileSync(statePath, 'utf8'));
    state.reports[0].wallMs += 1;
    writeFileSync(statePath, JSON.stringify(state));
    await expect(quantize(base)).rejects.toThrow(/already exists/);
    expect(existsSync(statePath)).toBe(true);
  });

  for (const method of ['awq', 'rtn'] as const) {
    it(`${method}: an interrupted run continues after its last finished layer and writes the uninterrupted run's checkpoint`, async () => {
      const model = await writeTinyModel({ layers: 3, modelType: 'qwen3' });
      const dir = scratchDir('awq-resume-');
      const base: QuantizeOptions = { model, out: '', calib: { kind: 'tokens', samples: samples(4) }, seqlen: 128, method };
      const whole = join(dir, 'whole');
      await quantize({ ...base, out: whole });
      expect(existsSync(resumeDirFor(whole)), 'a run without resume keeps nothing').toBe(false);

      const out = join(dir, 'q');
      expect(await runStoppingAfter({ ...base, out }, 1)).toBeInstanceOf(AbortedError);
      expect(existsSync(out)).toBe(false);
      expect(await keptProgress(out)).toEqual({ dir: resumeDirFor(out), layersDone: 2 });
      expect(readdirSync(resumeDirFor(out)).sort()).toEqual(
        method === 'awq'
          ? ['hidden-after-layer-00001.f32', 'layer-00000.safetensors', 'layer-00001.safetensors', 'state.json']
          : ['layer-00000.safetensors', 'layer-00001.safetensors', 'state.json'],
      );

      const phases: string[] = [];
      const { report } = await quantize({
        ...base,
        out,
        resume: true,
        onProgress: (e) => e.stage === 'layer' && phases.push(`${e.layer}:${e.phase}`),
      });
      expect(report.resumedLayers).toBe(2);
      expect(report.layers.map((l) => l.layer)).toEqual([0, 1, 2]);
      expect(phases.filter((p) => p.endsWith(':resumed'))).toEqual(['0:resumed', '1:resumed']);
      expect(phases).toContain('2:done');
      expect(phases.some((p) => /^[01]:(load|forward|scale-search)$/.test(p))).toBe(false);
      expect(existsSync(resumeDirFor(out)), 'removed once the checkpoint is complete').toBe(false);
      expect(checkpointFiles(out)).toEqual(checkpointFiles(whole));
    }, 120_000);
  }

  it('refuses a folder kept by a different run (naming what differs), a damaged one, and one locked by a live process', async () => {
    const model = await writeTinyModel({ layers: 2 });
    const dir = scratchDir('awq-resume-');
    const out = join(dir, 'q');
    const base: QuantizeOptions = { model, out, calib: { kind: 'tokens', samples: samples(2) }, seqlen: 128 };
    expect(await runStoppingAfter(base, 0)).toBeInstanceOf(AbortedError);
    const kept = resumeDirFor(out);
    const state = readFileSync(join(kept, 'state.json'), 'utf8');

    const other = await quantize({ ...base, wBit: 3, resume: true }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(InvalidArgumentError);
    expect((other as Error).message).toMatch(/holds 1 finished layers of a different run \(wBit: 4 there, 3 now\)/);
    const otherCalib = await quantize({ ...base, calib: { kind: 'tokens', samples: samples(3) }, resume: true }).catch((e: unknown) => e);
    expect((otherCalib as Error).message).toMatch(/calibration\.tokens: "[0-9a-f]{64}" there, "[0-9a-f]{64}" now/);
    expect(readFileSync(join(kept, 'state.json'), 'utf8'), 'a refused run leaves the folder as it was').toBe(state);
    // the model: a copy (new modification times) is the same model; other weights of the same
    // size and header (another fine-tune) are not
    const weights = join(model, readdirSync(model).find((f) => f.endsWith('.safetensors'))!);
    const bytes = readFileSync(weights);
    utimesSync(weights, new Date(), new Date(Date.now() + 5000));
    await expect(quantize({ ...base, wBit: 3, resume: true })).rejects.toThrow(/different run \(wBit: 4 there, 3 now\)/);
    const tuned = Buffer.from(bytes);
    for (let i = tuned.length >> 1; i < tuned.length; i += 4096) tuned[i] ^= 1;
    writeFileSync(weights, tuned);
    const tunedErr = await quantize({ ...base, resume: true }).catch((e: unknown) => e);
    const file = basename(weights).replace(/\./g, '\\.');
    expect((tunedErr as Error).message).toMatch(new RegExp(`different run \\(model\\.${file}: "\\d+ bytes, sampled sha256 [0-9a-f]{16}" there`));
    writeFileSync(weights, bytes);
    expect(existsSync(join(kept, 'lock'))).toBe(false);

    // the lock: a live process on this host refuses; one on another host refuses saying how to
    // clear it; a gone process, this process (not holding it: a restarted container's pid 1) and
    // a lock not written by awq are taken over
    const lock = (o: unknown) => writeFileSync(join(kept, 'lock'), typeof o === 'string' ? o : JSON.stringify(o));
    lock({ pid: process.ppid, host: hostname() });
    await expect(quantize({ ...base, resume: true })).rejects.toThrow(/is in use by another awq run \(process \d+\)/);
    lock({ pid: process.ppid, host: 'elsewhere' });
    await expect(quantize({ ...base, resume: true })).rejects.toThrow(/locked by process \d+ on host elsewhere; if no awq run uses it any more, delete .*lock and run again/);
    for (const stale of [{ pid: 2147483646, host: hostname() }, { pid: process.pid, host: hostname() }, '']) {
      lock(stale);
      await expect(quantize({ ...base, resume: true, wBit: 3 })).rejects.toThrow(/different run/); // got past the lock
      expect(existsSync(join(kept, 'lock'))).toBe(false);
    }

    // files awq did not write: refused, nothing deleted
    const foreign = join(dir, 'f');
    mkdirSync(resumeDirFor(foreign));
    writeFileSync(join(resumeDirFor(foreign), 'precious.txt'), 'x');
    await expect(quantize({ ...base, out: foreign, resume: true })).rejects.toThrow(/holds files awq did not write \(precious\.txt\)/);
    expect(readdirSync(resumeDirFor(foreign))).toEqual(['precious.txt']);
    // a run that stops before its first layer leaves no folder
    const early = join(dir, 'early');
    const none = await quantize({ ...base, out: early, resume: true, model: join(dir, 'absent') }).catch((e: unknown) => e);
    expect(none).toBeInstanceOf(Error);
    mkdirSync(early);
    await expect(quantize({ ...base, out: early, resume: true })).rejects.toThrow(/already exists/);
    expect(existsSync(resumeDirFor(early))).toBe(false);

    writeFileSync(join(kept, 'state.json'), '{"format": "awq-resume", "version": 1, "layersDone": 3');
    await expect(quantize({ ...base, resume: true })).rejects.toBeInstanceOf(BadCheckpointError);
    writeFileSync(join(kept, 'state.json'), state);
    writeFileSync(join(kept, 'layer-00000.safetensors'), 'not safetensors');
    const damaged = await quantize({ ...base, resume: true }).catch((e: unknown) => e);
    expect(damaged).toBeInstanceOf(BadCheckpointError);
    expect((damaged as Error).message).toMatch(/layer-00000\.safetensors/);
    expect(existsSync(out)).toBe(false);
  }, 120_000);

  it('awq quantize --resume: a failing layer leaves the finished ones and says how to continue; SIGINT too, and the rerun completes', async () => {
    const dir = scratchDir('awq-resume-cli-');
    const ids = join(dir, 'ids.json');
    writeFileSync(ids, JSON.stringify(samples(8)));
    const args = (model: string, out: string) => [cli, 'quantize', model, '--out', out, '--calib-tokens', ids, '--seqlen', '128', '--threads', '1', '--resume'];

    const nan = await writeTinyModel({ layers: 3, nanTensor: 'model.layers.2.mlp.up_proj.weight' });
    const failed = spawnSync(process.execPath, args(nan, join(dir, 'nan')), { encoding: 'utf8' });
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/2 finished layers kept in .*nan\.resume: run the same command again to continue after them/);
    expect(failed.stderr).toMatch(/layer 2: up_proj\.weight.*\(ERR_AWQ_NON_FINITE\)/);
    // other settings: the same command would not help, so no such advice
    const other = spawnSync(process.execPath, [...args(nan, join(dir, 'nan')), '--w-bit', '3'], { encoding: 'utf8' });
    expect(other.stderr).toMatch(/different run \(wBit: 4 there, 3 now\)/);
    expect(other.stderr).not.toMatch(/run the same command again/);

    // continued with another instruction set: allowed, said, and recorded
    const small = await writeTinyModel({ layers: 2 });
    const moved = join(dir, 'moved');
    // (--precision auto would resolve to bf16 on a CPU with AVX512-BF16 and fp32 on the portable path: another run)
    const calib = { kind: 'tokens', samples: samples(8) } as const;
    expect(await runStoppingAfter({ model: small, out: moved, calib, seqlen: 128, threads: 1, precision: 'fp32' }, 0)).toBeInstanceOf(AbortedError);
    const elsewhere = spawnSync(process.execPath, [...args(small, moved), '--json', '--precision', 'fp32'], {
      encoding: 'utf8',
      env: { ...process.env, AWQ_ISA: 'portable' },
    });
    expect(elsewhere.status, elsewhere.stderr).toBe(0);
    expect(elsewhere.stderr).toMatch(/the kept layers were computed on cpu: avx\S*.*, this run computes on cpu: portable/);
    expect(JSON.parse(elsewhere.stdout)).toMatchObject({ resumedLayers: 1, resumedOn: [expect.stringMatching(/^cpu: avx/)] });

    const model = await writeTinyModel({ layers: 12 });
    const out = join(dir, 'q');
    const child = spawn(process.execPath, args(model, out), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    for (let i = 0; i < 1200 && !((await keptProgress(out))?.layersDone); i++) await new Promise((r) => setTimeout(r, 25));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    const kept = await keptProgress(out);
    expect(kept?.layersDone, stderr).toBeGreaterThan(0);
    expect(stderr).toMatch(/finished layers? kept in .*q\.resume: run the same command again/);
    expect(existsSync(out)).toBe(false);

    const again = spawnSync(process.execPath, args(model, out), { encoding: 'utf8' });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`\\(layers 0-${kept!.layersDone - 1} kept from an earlier run\\)`));
    expect(existsSync(resumeDirFor(out))).toBe(false);
    expect(JSON.parse(readFileSync(join(out, 'awq-report.json'), 'utf8')).layers).toHaveLength(12);
  }, 180_000);
  it('SIGKILL at any moment (mid-layer, mid-save) loses at most the layer in progress; the runs that follow finish the same checkpoint', async () => {
    const dir = scratchDir('awq-resume-kill-');
    const ids = join(dir, 'ids.json');
    writeFileSync(ids, JSON.stringify(samples(8)));
    const model = await writeTinyModel({ layers: 10, seed: 7 });
    const args = (out: string, resume: boolean) =>
      [cli, 'quantize', model, '--out', out, '--calib-tokens', ids, '--seqlen', '128', '--threads', '1', '--precision', 'fp32', '--quiet', ...(resume ? ['--resume'] : [])];
    const whole = join(dir, 'whole');
    expect(spawnSync(process.execPath, args(whole, false), { encoding: 'utf8' }).status).toBe(0);

    const out = join(dir, 'q');
    const seen: number[] = [];
    // Each run is killed a little later than the last one got (sometimes inside a save: the
    // state's files are written every few milliseconds), until one finishes.
    for (let attempt = 0, delay = 150; attempt < 30; attempt++, delay += 37) {
      const child = spawn(process.execPath, args(out, true), { stdio: 'ignore' });
      const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
      const timer = setTimeout(() => child.kill('SIGKILL'), delay);
      const code = await exited;
      clearTimeout(timer);
      if (code === 0) break;
      // Killed after its commit and clean-up, before it exited: the checkpoint is complete (the
      // next run would be refused: the output exists and nothing is kept to resume).
      if (existsSync(out) && !existsSync(resumeDirFor(out))) break;
      seen.push((await keptProgress(out))?.layersDone ?? 0);
    }
    expect(existsSync(out), `kept after each kill: ${seen.join(', ')}`).toBe(true);
    expect(seen.length, 'at least one run was killed').toBeGreaterThan(0);
    expect(seen, 'kept layers never go back').toEqual([...seen].sort((x, y) => x - y));
    expect(checkpointFiles(out)).toEqual(checkpointFiles(whole));
    expect(existsSync(resumeDirFor(out))).toBe(false);
  }, 180_000);
});
