/**
 * quantize checks where it will write, and what it will read, before any slow work: an --out that
 * holds the input model (with --overwrite the old folder would be deleted, model and all) or the
 * calibration file, an --out inside the input with --resume (whose folder sits beside --out), and a
 * model missing a tensor that only the end of the run reads.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { BadCheckpointError, InvalidArgumentError, openAwqCheckpoint, quantize, type ProgressEvent } from '../dist/index.js';
import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

/** Every entry under `dir` with its size and modification time: unchanged means untouched. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    const st = statSync(d);
    out.push(`${d} ${st.mtimeMs}`);
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.push(`${join(d, e.name)} ${statSync(join(d, e.name)).size} ${statSync(join(d, e.name)).mtimeMs}`);
    }
  };
  walk(dir);
  return out.sort();
}

describe('quantize: where it writes, checked before any work', () => {
  it('refuses an --out that holds the input model or the calibration file, even with overwrite, touching nothing', async () => {
    const parent = scratchDir('awq-parent-');
    const model = join(parent, 'model');
    renameSync(await writeTinyModel({ vocab: 256, layers: 2 }), model);
    writeFileSync(join(parent, 'notes.txt'), 'keep me');
    const before = snapshot(parent);
    for (const overwrite of [true, false]) {
      const err = await quantize({ model, out: parent, overwrite, method: 'rtn' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(/holds the input .*model.*choose a folder outside it/);
    }
    expect(snapshot(parent)).toEqual(before);

    // the calibration file inside a model-like --out (one with a config.json) that --overwrite would replace
    const run = scratchDir('awq-run-');
    writeFileSync(join(run, 'config.json'), '{}');
    const calib = join(run, 'calib.txt');
    writeFileSync(calib, 'one sample\n\nanother sample\n');
    const err = await quantize({ model, out: run, overwrite: true, calib: { kind: 'text', path: calib } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(/holds the input .*calib\.txt/);
    expect(readFileSync(calib, 'utf8')).toContain('another sample');
  });

  it('--resume with an --out inside the input is refused before its folder is created', async () => {
    const model = await writeTinyModel({ vocab: 256, layers: 2 });
    const before = snapshot(model);
    const err = await quantize({ model, out: join(model, 'awq'), resume: true, method: 'rtn' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(/inside the input folder/);
    expect(snapshot(model)).toEqual(before);
  });

  it('a tensor that only the end of the run reads (an untied lm_head) is missed before the first layer', async () => {
    const model = await writeTinyModel({ vocab: 256, layers: 2, tie: true });
    const configPath = join(model, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), tie_word_embeddings: false }));
    const out = join(scratchDir('awq-out-'), 'q');
    const events: ProgressEvent[] = [];
    const err = await quantize({ model, out, method: 'rtn', onProgress: (e) => events.push(e) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect((err as Error).message).toMatch(/no tensor named 'lm_head\.weight'/);
    expect(events.filter((e) => e.stage === 'layer')).toEqual([]);
  });

  it('tensors that no part of the architecture reads are named in a note (RoPE inv_freq aside)', async () => {
    const model = await writeTinyModel({
      vocab: 256,
      layers: 1,
      extraTensors: ['lm_head.bias', 'model.layers.0.self_attn.rotary_emb.inv_freq', 'model.vision_tower.weight'],
    });
    const events: ProgressEvent[] = [];
    await quantize({ model, out: join(scratchDir('awq-out-'), 'q'), method: 'rtn', backend: 'cpu', onProgress: (e) => events.push(e) });
    const notes = events.filter((e) => e.stage === 'notice').map((e) => e.message);
    expect(notes).toEqual([`2 tensors of ${model} are not part of a llama model and will not be written: lm_head.bias, model.vision_tower.weight`]);
  });

  it('a bias the architecture builds but the folder lacks is named in a note and written as zeros', async () => {
    const missing = 'model.layers.1.self_attn.k_proj.bias';
    const model = await writeTinyModel({ modelType: 'qwen2', vocab: 256, layers: 2, omitTensors: [missing] });
    const out = join(scratchDir('awq-out-'), 'q');
    const events: ProgressEvent[] = [];
    await quantize({ model, out, method: 'rtn', backend: 'cpu', onProgress: (e) => events.push(e) });
    expect(events.filter((e) => e.stage === 'notice').map((e) => e.message)).toEqual([
      `1 bias that qwen2 builds is not in ${model} (${missing}): taken as zero, as Transformers starts them, and written as zeros`,
    ]);
    const ckpt = await openAwqCheckpoint(out);
    try {
      expect(Array.from((await ckpt.readLinear('model.layers.1.self_attn.k_proj')).bias!).every((b) => b === 0)).toBe(true);
      expect((await ckpt.readLinear('model.layers.0.self_attn.k_proj')).bias!.some((b) => b !== 0)).toBe(true);
    } finally {
      await ckpt.close();
    }
  });

  it("names what killed runs left beside --out, and an earlier --resume folder, and leaves them", async () => {
    const model = await writeTinyModel({ vocab: 256, layers: 1 });
    const parent = scratchDir('awq-left-');
    const out = join(parent, 'q');
    // pid 2^22 + 1 is above Linux's largest pid: no process has it
    const stale = join(parent, `q.tmp-${2 ** 22 + 1}-0badc0de`);
    const live = join(parent, `q.tmp-${process.ppid}-00c0ffee`); // a live process's (our parent)
    for (const d of [stale, live, `${out}.resume`]) mkdirSync(d);
    const events: ProgressEvent[] = [];
    await quantize({ model, out, method: 'rtn', backend: 'cpu', onProgress: (e) => events.push(e) });
    // notices, not steps: a renderer shows them as lines of their own, not as a step's label
    const notes = events.filter((e) => e.stage === 'notice').map((e) => e.message);
    expect(notes).toEqual([
      `${stale} was left by a run that was killed (its process is gone): remove it`,
      `${out}.resume holds the layers of an earlier --resume run, which this checkpoint replaces: remove it`,
    ]);
    expect(readdirSync(parent).sort()).toEqual(['q', 'q.resume', `q.tmp-${2 ** 22 + 1}-0badc0de`, `q.tmp-${process.ppid}-00c0ffee`].sort());
  });

  it('the same run again over its complete output is refused saying the folder holds a complete AWQ checkpoint', async () => {
    const model = await writeTinyModel({ vocab: 256, layers: 1 });
    const out = join(scratchDir('awq-again-'), 'q');
    await quantize({ model, out, method: 'rtn', backend: 'cpu' });
    const before = snapshot(out);
    const complete = `output folder ${out} already exists and holds a complete AWQ checkpoint (awq-report.json); ` +
      'pass --overwrite (overwrite: true) to redo it, or choose another folder';
    const err = await quantize({ model, out, method: 'rtn', backend: 'cpu' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toBe(complete);
    // the command line: the same message, code and exit status as any other existing folder
    const cli = spawnSync(process.execPath, ['dist/cli/main.js', 'quantize', model, '--out', out, '--method', 'rtn'], { encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(1);
    expect(cli.stderr).toContain(`${complete} (ERR_AWQ_INVALID_ARGUMENT)`);
    expect(snapshot(out)).toEqual(before);
    // not a complete output of ours: another quant_method, or no awq-report.json
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    writeFileSync(join(out, 'config.json'), JSON.stringify({ ...config, quantization_config: { quant_method: 'gptq' } }));
    const other = await quantize({ model, out, method: 'rtn', backend: 'cpu' }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(InvalidArgumentError);
    expect((other as Error).message).toBe(`output folder ${out} already exists; pass --overwrite (overwrite: true) to replace it`);
    writeFileSync(join(out, 'config.json'), JSON.stringify(config));
    rmSync(join(out, 'awq-report.json'));
    await expect(quantize({ model, out, method: 'rtn', backend: 'cpu' })).rejects.toThrow(/^output folder \S+ already exists; pass --overwrite/);
  });

  it('a non-finite lm_head fails the run before the first layer', async () => {
    const model = await writeTinyModel({ vocab: 256, layers: 2, tie: false, nanTensor: 'lm_head.weight' });
    const out = join(scratchDir('awq-out-'), 'q');
    mkdirSync(join(out, '..'), { recursive: true });
    const events: ProgressEvent[] = [];
    const err = await quantize({ model, out, method: 'rtn', onProgress: (e) => events.push(e) }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/lm_head\.weight.*NaN/);
    expect(events.filter((e) => e.stage === 'layer')).toEqual([]);
    expect(readdirSync(join(out, '..'))).toEqual([]);
  });
});
