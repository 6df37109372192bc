import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { SafetensorsWriter, evaluate, inspectCheckpoint } from '../dist/index.js';
import { HAVE_MODELS, LLAMA, LLAMA_AWQ, llamaConfig, tmpDir, writeJson } from './helpers/fixtures.js';

const EVAL_TEXT = '../shared/data/eval.txt';

const tmp = tmpDir('awq-inspect-');
afterAll(() => tmp.cleanup());
const cli = (...args: string[]) => spawnSync(process.execPath, ['dist/cli/main.js', 'inspect', ...args], { encoding: 'utf8' });

describe('awq inspect', () => {
  it('reports a generated sharded folder (--json and table)', async () => {
    const dir = join(tmp.dir, 'm');
    mkdirSync(dir);
    writeJson(join(dir, 'config.json'), llamaConfig({ model_type: 'qwen3', head_dim: 32 }));
    const w = await SafetensorsWriter.create(dir, { maxShardBytes: 64 });
    await w.add('a', 'F32', [8], new Float32Array(8));
    await w.add('b', 'BF16', [16], new Uint16Array(16));
    await w.add('c', 'BF16', [4], new Uint16Array(4));
    await w.finish();
    const r = JSON.parse(cli(dir, '--json').stdout);
    expect(r).toMatchObject({
      modelType: 'qwen3', tensorCount: 3, totalBytes: 32 + 32 + 8, quantization: null,
      dtypes: { F32: { tensors: 1, bytes: 32 }, BF16: { tensors: 2, bytes: 40 } },
    });
    expect(r.config.qkNorm).toBe(true);
    expect(r.shards.map((s: { file: string }) => s.file)).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const table = cli(dir);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/architecture: qwen3/);
    expect(table.stdout).toMatch(/shards: 2/);
  });

  it('warns when the settings say AWQ in a form the reader refuses (quant_config.json GEMV); another method is just not AWQ', async () => {
    for (const [name, extra, quantConfig, warning] of [
      ['gemv', {}, { zero_point: true, q_group_size: 128, w_bit: 4, version: 'GEMV' }, /version: expected 'gemm'.*got "GEMV"/],
      ['awq3', { quantization_config: { quant_method: 'awq', bits: 3, group_size: 128 } }, null, /bits: expected 4/],
      ['gptq', { quantization_config: { quant_method: 'gptq', bits: 4, group_size: 128 } }, null, null],
    ] as const) {
      const dir = join(tmp.dir, `q-${name}`);
      mkdirSync(dir);
      writeJson(join(dir, 'config.json'), llamaConfig(extra));
      if (quantConfig) writeJson(join(dir, 'quant_config.json'), quantConfig);
      const w = await SafetensorsWriter.create(dir);
      await w.add('a', 'F32', [2], new Float32Array(2));
      await w.finish();
      const r = await inspectCheckpoint(dir);
      expect(r.awq, name).toBeNull();
      if (warning) expect(r.awqError, name).toMatch(warning);
      else expect(r.awqError, name).toBeNull();
    }
  });

  it('an unsupported architecture is still inspected; a missing path is an error', async () => {
    const dir = join(tmp.dir, 'gpt');
    mkdirSync(dir);
    writeJson(join(dir, 'config.json'), llamaConfig({ model_type: 'gpt2' }));
    const w = await SafetensorsWriter.create(dir);
    await w.finish();
    const r = await inspectCheckpoint(dir);
    expect(r.modelType).toBe('gpt2');
    expect(r.configError).toMatch(/not supported/);
    const bad = cli(join(tmp.dir, 'absent'));
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/no such file or folder \(ERR_AWQ_INVALID_ARGUMENT\)/);
  });

  it.skipIf(!HAVE_MODELS)('reports llama-22m and llama-22m-awq (skipped when ../shared is absent)', () => {
    const r = JSON.parse(execFileSync(process.execPath, ['dist/cli/main.js', 'inspect', LLAMA, '--json'], { encoding: 'utf8' }));
    expect(r).toMatchObject({ modelType: 'llama', tensorCount: 56, totalBytes: 44577792, quantization: null });
    expect(r.shards.length).toBe(4);
    const a = JSON.parse(execFileSync(process.execPath, ['dist/cli/main.js', 'inspect', LLAMA_AWQ, '--json'], { encoding: 'utf8' }));
    expect(a.quantization).toEqual({ quant_method: 'awq', bits: 4, group_size: 128, zero_point: true, version: 'gemm', modules_to_not_convert: null });
    expect(a.awq.linears).toBe(42);
    expect(a.packedLinears).toBe(42);
    expect(a.awqError).toBeNull();
    expect(a.dtypes.I32.tensors).toBe(84);
    // one shard alone: the packed linears are named, and where their settings are
    const shard = join(LLAMA_AWQ, 'model.safetensors');
    expect(JSON.parse(cli(shard, '--json').stdout)).toMatchObject({ modelType: null, quantization: null, awq: null, packedLinears: 42 });
    expect(cli(shard).stdout).toMatch(/quantization: 42 AWQ-packed linears .*settings are in the model folder's config\.json/);
    expect(cli(join(LLAMA, readdirSync(LLAMA).find((f) => f.endsWith('.safetensors'))!)).stdout).toMatch(/quantization: none/);
  });

  it.skipIf(!HAVE_MODELS)("llama-22m-awq in AutoAWQ's older form (quant_config.json) inspects and evaluates as the original (skipped when ../shared is absent)", async () => {
    const dir = join(tmp.dir, 'awq-legacy');
    mkdirSync(dir);
    for (const f of readdirSync(LLAMA_AWQ)) if (f !== 'config.json') symlinkSync(join(LLAMA_AWQ, f), join(dir, f));
    const { quantization_config: qc, ...cfg } = JSON.parse(readFileSync(join(LLAMA_AWQ, 'config.json'), 'utf8'));
    writeJson(join(dir, 'config.json'), cfg);
    writeJson(join(dir, 'quant_config.json'), { zero_point: qc.zero_point, q_group_size: qc.group_size, w_bit: qc.bits, version: 'GEMM' });
    const r = JSON.parse(cli(dir, '--json').stdout);
    expect(r.quantizationFile).toBe('quant_config.json');
    expect(r.awq).toMatchObject({ bits: 4, groupSize: 128, linears: 42 });
    expect(r.awqError).toBeNull();
    expect(cli(dir).stdout).toMatch(/quantization \(quant_config\.json\): .*\n {2}AWQ 4-bit, group 128, gemm: 42 quantized linears/);
    const text = readFileSync(EVAL_TEXT, 'utf8').slice(0, 20000);
    const [legacy, original] = await Promise.all([evaluate({ model: dir, text, seqlen: 128 }), evaluate({ model: LLAMA_AWQ, text, seqlen: 128 })]);
    expect(legacy.perplexity).toBe(original.perplexity);
  });

  it.skipIf(!HAVE_MODELS)('warns when the AWQ reader would refuse the checkpoint (skipped when ../shared is absent)', () => {
    // llama-22m-awq's config copied with group_size 64: its qzeros and scales have half the groups
    const dir = join(tmp.dir, 'awq-g64');
    mkdirSync(dir);
    for (const f of readdirSync(LLAMA_AWQ)) if (f !== 'config.json') symlinkSync(join(LLAMA_AWQ, f), join(dir, f));
    const cfg = JSON.parse(readFileSync(join(LLAMA_AWQ, 'config.json'), 'utf8'));
    writeJson(join(dir, 'config.json'), { ...cfg, quantization_config: { ...cfg.quantization_config, group_size: 64 } });
    const r = cli(dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/warning: not readable as an AWQ checkpoint: .*qzeros': expected shape \[8,/);
  });
});
