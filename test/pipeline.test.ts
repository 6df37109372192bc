/**
 * The quantize pipeline on tiny random models: output format, every supported architecture,
 * RTN vs AWQ structure, bad input and abort (nothing that looks complete is left behind).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import {
  AbortedError,
  BadCheckpointError,
  backends,
  CudaError,
  evaluate,
  Int4Linear,
  InvalidArgumentError,
  IoError,
  loadAwq,
  ModelFolder,
  NonFiniteError,
  openAwqCheckpoint,
  pseudoQuantize,
  quantize,
  UnsupportedArchitectureError,
  type AwqLinearTensors,
  type ProgressEvent,
} from '../dist/index.js';
import { hasShared, sharedSkipReason } from './helpers/shared.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { scratchDir } from './helpers/scratch.js';

const outDir = () => join(scratchDir('awq-out-'), 'q');
// Pre-tokenized calibration: `n` tokens as samples of 128 (no tokenizer needed, deterministic).
const tokens = (n: number, seed: number) =>
  Array.from({ length: Math.ceil(n / 128) }, (_, s) =>
    Array.from({ length: Math.min(128, n - s * 128) }, (_, i) => ((s * 128 + i) * 7919 + seed * 31) % 8000),
  );

describe.skipIf(!hasShared)('quantize pipeline (tiny models)', () => {
  for (const modelType of ['llama', 'mistral', 'qwen2', 'qwen3'] as const) {
    it(`${modelType}: writes a readable AWQ checkpoint with a report`, async () => {
      const model = await writeTinyModel({ modelType, kvHeads: modelType === 'mistral' ? 4 : 2 });
      const out = outDir();
      const events: string[] = [];
      const { report } = await quantize({
        model,
        out,
        calib: { kind: 'tokens', samples: tokens(512, 1) },
        seqlen: 128,
        onProgress: (e) => events.push(`${e.stage}:${e.phase ?? ''}`),
      });
      expect(report.layers).toHaveLength(2);
      expect(events).toContain('layer:scale-search');
      expect(events.at(-1)).toBe('done:');
      const ckpt = await openAwqCheckpoint(out);
      expect(ckpt.quantization).toMatchObject({ bits: 4, groupSize: 128, zeroPoint: true, version: 'gemm' });
      expect(ckpt.linearNames()).toHaveLength(14);
      const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
      expect(cfg.quantization_config).toEqual({
        quant_method: 'awq', bits: 4, group_size: 128, zero_point: true, version: 'gemm', modules_to_not_convert: null,
      });
      expect(cfg.torch_dtype).toBe('float16');
      // the report on disk carries how each group's loss was computed (512 tokens: the Gram route
      // is cheaper for down_proj 256 -> 128)
      const written = JSON.parse(readFileSync(join(out, 'awq-report.json'), 'utf8'));
      expect(written.layers[0].groups.find((g: { group: string }) => g.group === 'down').lossMethod).toBe('gram');
      expect(existsSync(join(out, 'tokenizer.json'))).toBe(true);
      await ckpt.folder.close();
      // GQA models skip the o_proj group; MHA models search it.
      const oGroup = report.layers[0].groups.find((g) => g.group === 'o');
      if (modelType === 'mistral') expect(oGroup?.skipped).toBeUndefined();
      else expect(oGroup?.skipped).toMatch(/grouped-query/);
      const r = await evaluate({ model: out, text: 'the quick brown fox jumps over the lazy dog. '.repeat(60), seqlen: 64 });
      expect(Number.isFinite(r.perplexity)).toBe(true);
    });
  }

  it('evaluate with backend cuda gives the CPU perplexity (fp32); without a device a CudaError, and auto falls back to the CPU', async () => {
    const text = 'the quick brown fox jumps over the lazy dog. '.repeat(60);
    for (const modelType of ['qwen2', 'qwen3'] as const) {
      const model = await writeTinyModel({ layers: 2, modelType });
      const cpu = await evaluate({ model, text, seqlen: 64 });
      expect(cpu.backend).toMatch(/^cpu \(/);
      if (!backends().cuda) {
        const err = await evaluate({ model, text, seqlen: 64, backend: 'cuda' }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CudaError);
        expect((err as Error).message).toMatch(/npm run build:cuda/);
        const auto = await evaluate({ model, text, seqlen: 64, backend: 'auto' });
        expect([auto.backend.slice(0, 3), auto.perplexity]).toEqual(['cpu', cpu.perplexity]);
        continue;
      }
      const gpu = await evaluate({ model, text, seqlen: 64, backend: 'cuda' });
      expect(gpu.backend).toMatch(/^cuda \(/);
      expect(Math.abs(gpu.perplexity / cpu.perplexity - 1), modelType).toBeLessThan(1e-5);
    }
  });

  it('rtn needs no calibration and differs from awq', async () => {
    const model = await writeTinyModel({ layers: 1 });
    // RTN uses no activations: no tokenizer, no calibration text, no forward
    rmSync(join(model, 'tokenizer.json'), { force: true });
    const out = outDir();
    const phases: string[] = [];
    const { report } = await quantize({ model, out, method: 'rtn', onProgress: (e) => e.phase && phases.push(e.phase) });
    expect(report.calibration).toBeNull();
    expect(report.layers[0].groups.every((g) => g.bestRatio === 0 || g.skipped)).toBe(true);
    expect(phases).toContain('quantize');
    expect(phases).not.toContain('forward');
    expect(report.layers[0].gflop).toBe(0);
  });

  it('keepDtype writes embeddings and norms in the source dtype, with torch_dtype to match', async () => {
    const model = await writeTinyModel({ layers: 1 }); // an fp32 model
    const out = outDir();
    await quantize({ model, out, method: 'rtn', keepDtype: true });
    const ck = await openAwqCheckpoint(out);
    expect(ck.folder.info('model.embed_tokens.weight').dtype).toBe('F32');
    expect(ck.folder.info('model.layers.0.input_layernorm.weight').dtype).toBe('F32');
    expect(ck.folder.info('model.norm.weight').dtype).toBe('F32');
    expect(ck.folder.info('model.layers.0.self_attn.q_proj.scales').dtype).toBe('F16');
    await ck.close();
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype).toBe('float32');
  });

  it('symmetric quantization is stored with explicit zero points, and says zero_point: true', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const out = outDir();
    const { report } = await quantize({ model, out, method: 'rtn', zeroPoint: false });
    expect(report.options.zeroPoint).toBe(false); // the method, recorded in the report
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config.zero_point).toBe(true);
    const ck = await openAwqCheckpoint(out);
    const l = await ck.readLinear('model.layers.0.mlp.down_proj');
    expect(new Set(l.qzeros)).toEqual(new Set([0x88888888 | 0])); // z = 8 in every nibble
    await ck.close();
  });

  it('groupSize -1 (one group per row; CLI --group-size -1) is written as group_size -1 and loads back: scales [1, out] in every linear', async () => {
    const model = await writeTinyModel({ layers: 1 });
    for (const method of ['awq', 'rtn'] as const) {
      const out = outDir();
      if (method === 'awq') {
        await quantize({ model, out, method, groupSize: -1, calib: { kind: 'tokens', samples: tokens(256, 2) }, seqlen: 128 });
      } else {
        const cli = spawnSync(process.execPath, ['dist/cli/main.js', 'quantize', model, '--out', out, '--method', 'rtn', '--group-size', '-1', '--quiet'], { encoding: 'utf8' });
        expect(cli.stderr).toBe('');
        expect(cli.status).toBe(0);
      }
      expect(JSON.parse(readFileSync(join(out, 'awq-report.json'), 'utf8')).options.groupSize).toBe(-1);
      expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config.group_size).toBe(-1);
      const loaded = await loadAwq(out);
      const ck = await openAwqCheckpoint(out);
      const source = await ModelFolder.open(model);
      try {
        expect(loaded.quantization.groupSize).toBe(-1);
        expect(loaded.linears.size).toBe(7);
        for (const [name, lin] of loaded.linears) {
          expect(ck.folder.info(`${name}.scales`).shape, name).toEqual([1, lin.outFeatures]);
          expect(ck.folder.info(`${name}.qzeros`).shape, name).toEqual([1, lin.outFeatures / 8]);
          expect(lin.groupSize, name).toBe(lin.inFeatures);
          // round to nearest has nothing but the quantization: the weights pseudoQuantize gives
          if (method !== 'rtn') continue;
          const w = await source.readF32(`${name}.weight`);
          expect(lin.dequantize(), name).toEqual(await pseudoQuantize(w, lin.outFeatures, lin.inFeatures, { wBit: 4, groupSize: -1, zeroPoint: true }));
        }
      } finally {
        await Promise.all([loaded.dispose(), ck.close(), source.close()]);
      }
    }
  });

  it('refuses group sizes that do not divide in_features, naming the tensor', async () => {
    const model = await writeTinyModel({ hidden: 96, heads: 3, kvHeads: 1, intermediate: 192, layers: 1 });
    const err = await quantize({ model, out: outDir(), groupSize: 64, method: 'rtn' }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toMatch(/model\.layers\.0\.self_attn\.q_proj: in_features 96 is not divisible by the group size 64/);
  });

  it('refuses unsupported architectures', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const cfg = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
    writeFileSync(join(model, 'config.json'), JSON.stringify({ ...cfg, model_type: 'gpt2' }));
    await expect(quantize({ model, out: outDir(), method: 'rtn' })).rejects.toBeInstanceOf(UnsupportedArchitectureError);
  });

  it('refuses calibration and evaluation sequences longer than a sliding attention window', async () => {
    const model = await writeTinyModel({ modelType: 'mistral', kvHeads: 4, layers: 1 });
    const cfg = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
    writeFileSync(join(model, 'config.json'), JSON.stringify({ ...cfg, sliding_window: 64 }));
    const out = outDir();
    const err = await quantize({ model, out, calib: { kind: 'tokens', samples: tokens(256, 1) }, seqlen: 128 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toMatch(/calibration seqlen 128 is longer than the model's sliding attention window \(64 tokens\)/);
    expect(existsSync(out)).toBe(false);
    const text = 'the quick brown fox jumps over the lazy dog. '.repeat(60);
    await expect(evaluate({ model, text, seqlen: 128 })).rejects.toThrow(/seqlen 128 is longer than/);
    expect(Number.isFinite((await evaluate({ model, text, seqlen: 64 })).perplexity)).toBe(true);
  });

  it('a weight stored with the right element count but a transposed shape is refused, naming it', async () => {
    const model = await writeTinyModel({ layers: 1, transposedTensor: 'model.layers.0.mlp.up_proj.weight' });
    const out = outDir();
    const err = await quantize({ model, out, method: 'rtn' }).catch((e) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect(err.message).toMatch(/tensor model\.layers\.0\.mlp\.up_proj\.weight has shape \[128,256\], the config implies \[256,128\]/);
    expect(existsSync(out)).toBe(false);
  });

  it('a weight or embedding stored as an integer dtype is refused from the headers by quantize and evaluate, naming file, tensor and dtype', async () => {
    // QA: an I16 q_proj gave `awq eval` a perplexity with exit 0, and `--method rtn` a checkpoint of garbage
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(20);
    for (const name of ['model.layers.0.self_attn.q_proj.weight', 'model.embed_tokens.weight']) {
      const model = await writeTinyModel({ layers: 1, dtypes: { [name]: 'I16' } });
      const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const re = new RegExp(
        `^${esc(model)}/model-\\d+-of-\\d+\\.safetensors: tensor '${esc(name)}' has dtype I16, ` +
          'but it is read as floating-point weights: accepted dtypes are F32, F16 and BF16$',
      );
      const out = outDir();
      const phases: string[] = [];
      const err = await quantize({ model, out, method: 'rtn', onProgress: (e) => e.phase && phases.push(e.phase) }).catch((e) => e);
      expect(err, name).toBeInstanceOf(BadCheckpointError);
      expect(err.message).toMatch(re);
      expect(phases, 'before any layer').toEqual([]);
      expect(existsSync(out)).toBe(false);
      const messages: string[] = [];
      const evalErr = await evaluate({ model, text, seqlen: 64, onProgress: (e) => e.message && messages.push(e.message) }).catch((e) => e);
      expect(evalErr, name).toBeInstanceOf(BadCheckpointError);
      expect(evalErr.message).toMatch(re);
      expect(messages, 'before tokenizing').not.toContain('tokenizing');
    }
  });

  it('F16 and BF16 weights, norms and embeddings are read as F32 ones are', async () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(20);
    const f32 = await writeTinyModel({ layers: 1 });
    const mixed = await writeTinyModel({
      layers: 1,
      dtypes: {
        'model.embed_tokens.weight': 'BF16',
        'model.layers.0.self_attn.q_proj.weight': 'F16',
        'model.layers.0.mlp.up_proj.weight': 'BF16',
        'model.layers.0.input_layernorm.weight': 'F16',
        'model.norm.weight': 'BF16',
      },
    });
    const a = await evaluate({ model: f32, text, seqlen: 64, windows: 1 });
    const b = await evaluate({ model: mixed, text, seqlen: 64, windows: 1 });
    // (a random model's perplexity is astronomical: compare the mean log-likelihood; rounding to
    // bf16 moves it by about 0.5%, a misread tensor by far more)
    expect(Math.abs(b.meanNll / a.meanNll - 1)).toBeLessThan(0.02);
    const out = outDir();
    const { report } = await quantize({ model: mixed, out, method: 'rtn' });
    expect(report.layers).toHaveLength(1);
    const q = await evaluate({ model: out, text, seqlen: 64, windows: 1 });
    expect(Number.isFinite(q.perplexity)).toBe(true);
  });

  it('calibration token ids outside the vocabulary, and non-objects for tensors or folders, are InvalidArgumentErrors', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const samples = tokens(256, 1);
    samples[1][5] = 99999;
    const err = await quantize({ model, out: outDir(), calib: { kind: 'tokens', samples }, seqlen: 128 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe("calib.samples: sample 1, position 5: token id 99999 is outside the model's vocabulary (vocab_size 8192)");
    await expect(openAwqCheckpoint(undefined as unknown as string)).rejects.toThrow(InvalidArgumentError);
    await expect(Int4Linear.fromAwq(null as unknown as AwqLinearTensors)).rejects.toThrow(InvalidArgumentError);
  });

  it('an auxiliary file that cannot be read fails the run before any layer, naming it (it is copied only at the end)', async () => {
    const model = await writeTinyModel({ layers: 1 });
    // a link to itself: stat and open fail with ELOOP, for root too (unlike a mode-0 file)
    symlinkSync('special_tokens_map.json', join(model, 'special_tokens_map.json'));
    const out = outDir();
    const phases: string[] = [];
    const err = await quantize({ model, out, method: 'rtn', onProgress: (e) => e.phase && phases.push(e.phase) }).catch((e) => e);
    expect(err).toBeInstanceOf(IoError);
    expect(err.message).toMatch(/special_tokens_map\.json/);
    expect(phases).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });

  it('NaN in a weight is a typed error naming the tensor; nothing is left behind', async () => {
    const model = await writeTinyModel({ layers: 1, nanTensor: 'model.layers.0.mlp.up_proj.weight' });
    const out = outDir();
    const err = await quantize({ model, out, calib: { kind: 'tokens', samples: tokens(256, 1) }, seqlen: 128 }).catch((e) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(err.message).toMatch(/: layer 0: up_proj\.weight/);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(join(out, '..'))).toEqual([]);
  });

  it('an exception thrown by onProgress fails the run with it at any event, native layer phases and done included; no output is left', async () => {
    const model = await writeTinyModel({ layers: 2 });
    const calib = { kind: 'tokens' as const, samples: tokens(256, 2) };
    const stops: [string, (e: ProgressEvent) => boolean][] = [
      ['scale-search', (e) => e.layer === 0 && e.phase === 'scale-search'], // from the native job
      ['clip-search', (e) => e.layer === 1 && e.phase === 'clip-search'],
      ['layer done', (e) => e.layer === 1 && e.phase === 'done'],
      ['write', (e) => e.stage === 'write'],
      ['done', (e) => e.stage === 'done'],
    ];
    for (const [label, when] of stops) {
      const out = outDir();
      const seen: string[] = [];
      const failure = new Error(`listener at ${label}`);
      const err = await quantize({
        model, out, calib, seqlen: 128, threads: 1,
        onProgress: (e) => {
          seen.push(`${e.stage}:${e.layer ?? ''}:${e.phase ?? ''}`);
          if (when(e)) throw failure;
        },
      }).catch((e: unknown) => e);
      expect(err, label).toBe(failure);
      expect(existsSync(out), label).toBe(false);
      expect(readdirSync(join(out, '..')), `${label}: no temporary folder left`).toEqual([]);
      if (label === 'scale-search') {
        // the native job stopped there: no later phase of the layer, no later layer
        expect(seen.at(-1)).toBe('layer:0:scale-search');
      }
      // the same run again, with a listener that does not throw, completes
      if (label === 'done') {
        const events: string[] = [];
        await quantize({ model, out, calib, seqlen: 128, threads: 1, onProgress: (e) => events.push(e.stage) });
        expect(events.at(-1)).toBe('done');
        expect(existsSync(join(out, 'awq-report.json'))).toBe(true);
      }
    }
    // RTN's native phase too
    const out = outDir();
    const failure = new Error('rtn listener');
    const rtn = await quantize({ model, out, method: 'rtn', onProgress: (e) => { if (e.phase === 'quantize') throw failure; } }).catch((e: unknown) => e);
    expect(rtn).toBe(failure);
    expect(existsSync(out)).toBe(false);
  });

  it('an exception thrown by evaluate\'s onProgress fails the evaluation with it', async () => {
    const model = await writeTinyModel({ layers: 2 });
    const text = 'the quick brown fox jumps over the lazy dog. '.repeat(60);
    for (const when of [(e: ProgressEvent) => e.stage === 'load', (e: ProgressEvent) => e.stage === 'eval' && e.layer === 1, (e: ProgressEvent) => e.stage === 'eval' && e.layer === undefined]) {
      const failure = new Error('listener');
      const err = await evaluate({ model, text, seqlen: 64, windows: 2, onProgress: (e) => { if (when(e)) throw failure; } }).catch((e: unknown) => e);
      expect(err).toBe(failure);
    }
  });

  it('aborting mid-run leaves no output folder', async () => {
    const model = await writeTinyModel({ layers: 3 });
    const out = outDir();
    const controller = new AbortController();
    const p = quantize({
      model,
      out,
      calib: { kind: 'tokens', samples: tokens(512, 3) },
      seqlen: 128,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.stage === 'layer' && e.layer === 1) controller.abort();
      },
    });
    await expect(p).rejects.toBeInstanceOf(AbortedError);
    expect(existsSync(out)).toBe(false);
    const parent = join(out, '..');
    expect(readdirSync(parent)).toEqual([]);
  });
});
if (!hasShared) console.warn(`pipeline tests skipped: ${sharedSkipReason} (they borrow its tokenizer)`);
