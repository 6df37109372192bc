import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import {
  BadCheckpointError,
  BadConfigError,
  InvalidArgumentError,
  ModelFolder,
  SafetensorsWriter,
  UnsupportedArchitectureError,
  checkSequenceFits,
  copyAuxiliaryFiles,
  parseModelConfig,
  checkOutputTarget,
  prepareOutputDir,
} from '../dist/index.js';
import { HAVE_MODELS, LLAMA, llamaConfig, safetensorsBytes, tmpDir, writeJson } from './helpers/fixtures.js';

const tmp = tmpDir('awq-mf-');
afterAll(() => tmp.cleanup());

describe('parseModelConfig', () => {
  it('parses llama with defaults and llama3 rope scaling', () => {
    const c = parseModelConfig(
      llamaConfig({
        head_dim: undefined,
        rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
        rope_theta: 500000,
        attention_bias: true,
      }),
      'cfg',
    );
    expect(c).toMatchObject({
      modelType: 'llama', hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 16,
      rmsNormEps: 1e-5, ropeTheta: 500000, tieWordEmbeddings: false, attentionBias: true, qkNorm: false, vocabSize: 32,
      maxPositionEmbeddings: 128, hiddenAct: 'silu', slidingWindow: null,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    });
    expect(parseModelConfig(llamaConfig({ rope_scaling: { type: 'linear', factor: 2 } }), 'c').ropeScaling).toEqual({ type: 'linear', factor: 2 });
  });

  it('qwen2 has qkv bias, qwen3 q/k norm and its own head_dim, mistral a sliding window', () => {
    const q2 = parseModelConfig(llamaConfig({ model_type: 'qwen2', use_sliding_window: false, sliding_window: 4096 }), 'c');
    expect([q2.attentionBias, q2.qkNorm, q2.slidingWindow]).toEqual([true, false, null]);
    const q3 = parseModelConfig(llamaConfig({ model_type: 'qwen3', head_dim: 32, tie_word_embeddings: true }), 'c');
    expect([q3.attentionBias, q3.qkNorm, q3.headDim, q3.tieWordEmbeddings]).toEqual([false, true, 32, true]);
    const m = parseModelConfig(llamaConfig({ model_type: 'mistral', sliding_window: 4096 }), 'c');
    expect(m.slidingWindow).toBe(4096);
    const d = parseModelConfig(llamaConfig({ rms_norm_eps: undefined, num_key_value_heads: undefined }), 'c');
    expect([d.rmsNormEps, d.numKvHeads]).toEqual([1e-6, 4]);
  });

  it('reads the Transformers 5 rope_parameters, the top-level rope_theta only as a fallback', () => {
    const llama3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const c = parseModelConfig(llamaConfig({ rope_theta: undefined, rope_parameters: { rope_theta: 500000, ...llama3 } }), 'c');
    expect([c.ropeTheta, c.ropeScaling]).toEqual([
      500000,
      { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    ]);
    const q = parseModelConfig(llamaConfig({ model_type: 'qwen3', rope_theta: 7, rope_parameters: { rope_theta: 1e6, rope_type: 'default' } }), 'c');
    expect([q.ropeTheta, q.ropeScaling]).toEqual([1e6, null]);
    const fallback = parseModelConfig(llamaConfig({ rope_theta: 250000, rope_parameters: { rope_type: 'linear', factor: 2 } }), 'c');
    expect([fallback.ropeTheta, fallback.ropeScaling]).toEqual([250000, { type: 'linear', factor: 2 }]);
    expect(parseModelConfig(llamaConfig({ rope_theta: undefined, rope_parameters: { rope_type: 'default' } }), 'c').ropeTheta).toBe(10000);
  });

  it('takes the Transformers class defaults for absent num_key_value_heads and head_dim, and swish for silu', () => {
    const absent = { num_key_value_heads: undefined, hidden_size: 1024, num_attention_heads: 32 };
    expect(parseModelConfig(llamaConfig(absent), 'c').numKvHeads).toBe(32);
    expect(parseModelConfig(llamaConfig({ ...absent, model_type: 'mistral' }), 'c').numKvHeads).toBe(8);
    expect(parseModelConfig(llamaConfig({ ...absent, model_type: 'qwen2' }), 'c').numKvHeads).toBe(32);
    // an explicit null means num_attention_heads in every class
    expect(parseModelConfig(llamaConfig({ ...absent, num_attention_heads: 16, model_type: 'mistral', num_key_value_heads: null }), 'c').numKvHeads).toBe(16);
    const q3 = parseModelConfig(llamaConfig({ model_type: 'qwen3', hidden_size: 1024, num_attention_heads: 16, num_key_value_heads: 8 }), 'c');
    expect(q3.headDim).toBe(128);
    expect(parseModelConfig(llamaConfig({ hidden_size: 1024, num_attention_heads: 16 }), 'c').headDim).toBe(64);
    expect(parseModelConfig(llamaConfig({ hidden_act: 'swish' }), 'c').hiddenAct).toBe('silu');
  });

  it('finds the sliding window the layers use, and refuses sequences longer than it', () => {
    const window = (over: Record<string, unknown>) => parseModelConfig(llamaConfig(over), 'c').slidingWindow;
    expect(window({ model_type: 'mistral' })).toBe(4096); // MistralConfig's default
    expect(window({ model_type: 'mistral', sliding_window: null })).toBeNull();
    expect(window({ model_type: 'mistral', sliding_window: 1024 })).toBe(1024);
    expect(window({ sliding_window: 1024 })).toBeNull(); // llama has none
    expect(window({ model_type: 'qwen2', sliding_window: 1024 })).toBeNull(); // use_sliding_window false
    // qwen2/qwen3: only layers from max_window_layers on
    expect(window({ model_type: 'qwen2', use_sliding_window: true, sliding_window: 1024, num_hidden_layers: 28 })).toBeNull();
    expect(window({ model_type: 'qwen2', use_sliding_window: true, sliding_window: 1024, num_hidden_layers: 29 })).toBe(1024);
    expect(window({ model_type: 'qwen3', use_sliding_window: true, max_window_layers: 0 })).toBe(4096);
    const types = (t: string[]) => window({ model_type: 'qwen3', use_sliding_window: true, sliding_window: 512, num_hidden_layers: 2, layer_types: t });
    expect(types(['full_attention', 'full_attention'])).toBeNull();
    expect(types(['full_attention', 'sliding_attention'])).toBe(512);

    const cfg = parseModelConfig(llamaConfig({ model_type: 'mistral', sliding_window: 1024, max_position_embeddings: 4096 }), 'c');
    expect(() => checkSequenceFits(cfg, 8192, 'seqlen')).toThrow(/seqlen 8192 is longer than the model's max_position_embeddings \(4096\)/);
    expect(() => checkSequenceFits(cfg, 1024, 'seqlen')).not.toThrow();
    expect(() => checkSequenceFits(cfg, 1025, 'seqlen')).toThrow(InvalidArgumentError);
    expect(() => checkSequenceFits(cfg, 2048, 'seqlen')).toThrow(/seqlen 2048 is longer than the model's sliding attention window \(1024 tokens\)/);
  });

  it('unsupported architecture lists the supported ones', () => {
    expect(() => parseModelConfig(llamaConfig({ model_type: 'gpt2' }), 'x/config.json')).toThrow(UnsupportedArchitectureError);
    expect(() => parseModelConfig(llamaConfig({ model_type: 'gpt2' }), 'x')).toThrow(/'gpt2'.*llama, mistral, qwen2, qwen3/);
  });

  it('missing or wrong-typed fields name the field and the file', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ hidden_size: '512' }, /x\/config.json: field 'hidden_size': expected an integer >= 1, got "512"/],
      [{ num_hidden_layers: undefined }, /'num_hidden_layers'.*missing/],
      [{ rms_norm_eps: -1 }, /'rms_norm_eps'/],
      [{ tie_word_embeddings: 'yes' }, /'tie_word_embeddings'/],
      [{ num_key_value_heads: 3 }, /'num_key_value_heads'/],
      [{ hidden_act: 'gelu' }, /'hidden_act'/],
      [{ model_type: 7 }, /'model_type'/],
      [{ rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling type 'yarn' is not supported/],
      [{ rope_scaling: { rope_type: 'dynamic', factor: 4 } }, /'dynamic'/],
      [{ rope_scaling: { rope_type: 'llama3', factor: 8 } }, /rope_scaling.low_freq_factor/],
      [{ rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 1e6 } }, /rope_parameters type 'yarn' is not supported/],
      [{ rope_parameters: { rope_type: 'llama3', factor: 8 } }, /rope_parameters.low_freq_factor/],
      [{ rope_parameters: { full_attention: { rope_type: 'default' }, sliding_attention: { rope_type: 'default' } } }, /per layer type/],
      [{ partial_rotary_factor: 0.5 }, /'partial_rotary_factor': expected 1/],
      [{ rope_parameters: { rope_type: 'default', partial_rotary_factor: 0.25 } }, /'rope_parameters.partial_rotary_factor'/],
      [{ model_type: 'qwen2', use_sliding_window: true, layer_types: 'sliding_attention' }, /'layer_types'/],
    ];
    for (const [over, re] of cases) {
      let err: unknown;
      try {
        parseModelConfig(llamaConfig(over), 'x/config.json');
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(over)).toBeInstanceOf(BadConfigError);
      expect((err as Error).message).toMatch(re);
    }
    expect(() => parseModelConfig([], 'x')).toThrow(BadConfigError);
  });
});

/**
 * A tiny sharded folder written by hand: a [4] f32 in shard 1, b [2] f32 in shard 2 (`aInShard2`:
 * then a [4] = 9, 9, 9, 9 too).
 */
function handFolder(name: string, opts: { index?: Record<string, string>; dropShard2?: boolean; config?: unknown; aInShard2?: boolean } = {}): string {
  const dir = join(tmp.dir, name);
  mkdirSync(dir);
  if (opts.config !== null) writeJson(join(dir, 'config.json'), opts.config ?? llamaConfig());
  const s1 = safetensorsBytes({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer));
  const s2 = opts.aInShard2
    ? safetensorsBytes(
      { b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, a: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } },
      new Uint8Array(new Float32Array([5, 6, 9, 9, 9, 9]).buffer),
    )
    : safetensorsBytes({ b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(new Float32Array([5, 6]).buffer));
  writeFileSync(join(dir, 'model-00001-of-00002.safetensors'), s1);
  if (!opts.dropShard2) writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), s2);
  const weightMap = opts.index ?? { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' };
  writeJson(join(dir, 'model.safetensors.index.json'), { metadata: { total_size: 24 }, weight_map: weightMap });
  writeFileSync(join(dir, 'tokenizer.json'), '{"tok": 1}');
  writeFileSync(join(dir, 'generation_config.json'), '{}');
  return dir;
}

describe('ModelFolder', () => {
  it('opens a sharded folder and reads tensors across shards', async () => {
    const m = await ModelFolder.open(handFolder('ok'));
    expect(m.tensorNames()).toEqual(['a', 'b']);
    expect(m.shards()).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(Array.from(await m.readF32('b'))).toEqual([5, 6]);
    expect(m.has('c')).toBe(false);
    expect(() => m.info('c')).toThrow(BadCheckpointError);
    await m.close();
  });

  it('readF32 reads F32 / F16 / BF16 and refuses any other dtype, naming file, tensor and dtype; readRaw reads any', async () => {
    const dir = join(tmp.dir, 'dtypes');
    mkdirSync(dir);
    writeJson(join(dir, 'config.json'), llamaConfig());
    const data = new Uint8Array(20);
    new Float32Array(data.buffer, 0, 1)[0] = 1.5;
    new Uint16Array(data.buffer, 4, 4).set([0x3c00, 0x3f80, 0xfed4, 0xff38]); // f16 1, bf16 1, i16 -300, f64 bytes below
    const header = {
      f: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
      h: { dtype: 'F16', shape: [1], data_offsets: [4, 6] },
      b: { dtype: 'BF16', shape: [1], data_offsets: [6, 8] },
      i: { dtype: 'I16', shape: [1], data_offsets: [8, 10] },
      u: { dtype: 'U8', shape: [2], data_offsets: [10, 12] },
      d: { dtype: 'F64', shape: [1], data_offsets: [12, 20] },
    };
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, safetensorsBytes(header, data));
    const m = await ModelFolder.open(dir);
    try {
      expect([...(await m.readF32('f')), ...(await m.readF32('h')), ...(await m.readF32('b'))]).toEqual([1.5, 1, 1]);
      for (const [name, dtype] of [['i', 'I16'], ['u', 'U8'], ['d', 'F64']]) {
        const err = await m.readF32(name).catch((e: unknown) => e);
        expect(err, name).toBeInstanceOf(BadCheckpointError);
        expect((err as Error).message).toBe(
          `${file}: tensor '${name}' has dtype ${dtype}, but it is read as floating-point weights: accepted dtypes are F32, F16 and BF16`,
        );
      }
      // integer tensors are read raw (as the AWQ reader reads qweight / qzeros), or converted by the file
      expect(Array.from(new Int16Array((await m.readRaw('i')).buffer))).toEqual([-300]);
      expect(Array.from(await m.weights.fileOf('i').readF32('i'))).toEqual([-300]);
    } finally {
      await m.close();
    }
  });

  it('missing shard named in the index', async () => {
    await expect(ModelFolder.open(handFolder('noshard', { dropShard2: true }))).rejects.toThrow(
      /shard 'model-00002-of-00002.safetensors' named in weight_map does not exist/,
    );
  });

  it('the index only chooses the shard files: tensors missing from it are read, entries no shard holds are no error', async () => {
    const [s1, s2] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    // 'a' is mapped to a shard without it, 'b' not at all; 'c' and 'z' (stale entries, such as the
    // lm_head.weight of a tied model) are in no shard
    const m = await ModelFolder.open(handFolder('stale', { index: { a: s2, c: s2, z: s1 } }));
    expect(m.tensorNames()).toEqual(['a', 'b']);
    expect(Array.from(await m.readF32('a'))).toEqual([1, 2, 3, 4]);
    expect(Array.from(await m.readF32('b'))).toEqual([5, 6]);
    expect(m.has('c')).toBe(false);
    expect(() => m.info('c')).toThrow(BadCheckpointError);
    expect(() => m.info('c')).toThrow(/no tensor named 'c' \(model\.safetensors\.index\.json maps it to 'model-00002-of-00002\.safetensors', but no shard it lists holds it\)$/);
    expect(() => m.info('d')).toThrow(/no tensor named 'd'$/);
    await m.close();
    // only the files the index lists are read: shard 2 named nowhere is not opened
    const one = await ModelFolder.open(handFolder('unlisted-shard', { index: { a: s1, b: s1 } }));
    expect([one.tensorNames(), one.shards()]).toEqual([['a'], [s1]]);
    await one.close();
  });

  it('a tensor in two shards is read from the one the index maps it to; mapped to neither, a BadCheckpointError naming both', async () => {
    const [s1, s2] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    for (const [shard, values] of [[s1, [1, 2, 3, 4]], [s2, [9, 9, 9, 9]]] as const) {
      const m = await ModelFolder.open(handFolder(`twice-${shard}`, { aInShard2: true, index: { a: shard, b: s2, x: s1 } }));
      expect(m.info('a').file, shard).toBe(join(m.dir, shard));
      expect(Array.from(await m.readF32('a'))).toEqual(values);
      expect(m.tensorNames().sort()).toEqual(['a', 'b']);
      await m.close();
    }
    const unmapped = await ModelFolder.open(handFolder('twice-unmapped', { aInShard2: true, index: { b: s2, x: s1 } })).catch((e: unknown) => e);
    expect(unmapped).toBeInstanceOf(BadCheckpointError);
    expect((unmapped as Error).message).toMatch(
      /twice-unmapped\/model\.safetensors\.index\.json: tensor 'a' is in both 'model-00001-of-00002\.safetensors' and 'model-00002-of-00002\.safetensors', and weight_map does not say which to read$/,
    );
    // mapped to a third shard, which does not hold it
    const elsewhere = handFolder('twice-elsewhere', { aInShard2: true });
    writeFileSync(join(elsewhere, 'extra.safetensors'), safetensorsBytes({ e: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)));
    writeJson(join(elsewhere, 'model.safetensors.index.json'), { weight_map: { a: 'extra.safetensors', b: s2, x: s1 } });
    await expect(ModelFolder.open(elsewhere)).rejects.toThrow(/tensor 'a' is in both '.*', and weight_map maps it to 'extra\.safetensors'$/);
  });

  it('config.json missing or with a wrong field type; no weights', async () => {
    await expect(ModelFolder.open(handFolder('nocfg', { config: null }))).rejects.toThrow(BadConfigError);
    await expect(ModelFolder.open(join(tmp.dir, 'nocfg'))).rejects.toThrow(/config.json: missing/);
    // a path that is no folder says so (a typo, a Hub id, a weight file instead of its folder)
    writeFileSync(join(tmp.dir, 'nocfg', 'model.safetensors'), '');
    for (const [path, re] of [
      [join(tmp.dir, 'meta-llama', 'Llama-2-7b-hf'), /Llama-2-7b-hf: no such folder \(awq reads a local model folder: download the model first\)$/],
      [join(tmp.dir, 'nocfg', 'model.safetensors', 'x'), /x: no such folder/],
      [join(tmp.dir, 'nocfg', 'model.safetensors'), /model\.safetensors is a file; expected the model folder that holds config\.json and the weights$/],
    ] as const) {
      const err = await ModelFolder.open(path).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(re);
    }
    await expect(ModelFolder.open(handFolder('badcfg', { config: llamaConfig({ vocab_size: [1] }) }))).rejects.toThrow(/'vocab_size'/);
    const empty = join(tmp.dir, 'empty');
    mkdirSync(empty);
    writeJson(join(empty, 'config.json'), llamaConfig());
    writeFileSync(join(empty, 'pytorch_model.bin'), '');
    await expect(ModelFolder.open(empty)).rejects.toThrow(/convert them to safetensors/);
  });

  it('copyAuxiliaryFiles carries tokenizer and generation config, not weights or config', async () => {
    const dst = join(tmp.dir, 'aux-out');
    mkdirSync(dst);
    const copied = await copyAuxiliaryFiles(handFolder('aux'), dst);
    expect(copied).toEqual(['generation_config.json', 'tokenizer.json']);
    expect(readdirSync(dst).sort()).toEqual(copied);
  });

  it('copyAuxiliaryFiles follows symbolic links (a hub cache snapshot), carries chat templates, writes 0644', async () => {
    // A snapshot folder as huggingface_hub lays it out: every file a link into ../blobs.
    const blobs = join(tmp.dir, 'blobs');
    mkdirSync(blobs);
    const snap = join(tmp.dir, 'snapshot');
    mkdirSync(join(snap, 'additional_chat_templates'), { recursive: true });
    for (const [name, body] of [['tok', '{"tok": 2}'], ['gen', '{"do_sample": true}'], ['tpl', '{{ messages }}'], ['cfg', '{}']] as const) {
      writeFileSync(join(blobs, name), body);
      chmodSync(join(blobs, name), 0o444);
    }
    symlinkSync(join(blobs, 'tok'), join(snap, 'tokenizer.json'));
    symlinkSync(join(blobs, 'gen'), join(snap, 'generation_config.json'));
    symlinkSync(join(blobs, 'cfg'), join(snap, 'config.json'));
    symlinkSync(join(blobs, 'tpl'), join(snap, 'additional_chat_templates', 'tool_use.jinja'));
    symlinkSync(join(blobs, 'missing'), join(snap, 'special_tokens_map.json')); // dangling: skipped
    const dst = join(tmp.dir, 'snapshot-out');
    mkdirSync(dst);
    const copied = await copyAuxiliaryFiles(snap, dst);
    expect(copied).toEqual(['additional_chat_templates/tool_use.jinja', 'generation_config.json', 'tokenizer.json']);
    expect(readFileSync(join(dst, 'tokenizer.json'), 'utf8')).toBe('{"tok": 2}');
    expect(readFileSync(join(dst, 'additional_chat_templates', 'tool_use.jinja'), 'utf8')).toBe('{{ messages }}');
    expect(lstatSync(join(dst, 'tokenizer.json')).isFile()).toBe(true); // the content, not a link
    expect(statSync(join(dst, 'generation_config.json')).mode & 0o777).toBe(0o644);
  });
});

describe('prepareOutputDir', () => {
  it('writes in a temporary folder and renames it into place on commit', async () => {
    const out = join(tmp.dir, 'out1');
    const o = await prepareOutputDir(out);
    expect(o.tempDir.startsWith(`${out}.tmp-`)).toBe(true);
    writeFileSync(join(o.tempDir, 'x'), '1');
    expect(existsSync(out)).toBe(false);
    await o.commit();
    expect(readFileSync(join(out, 'x'), 'utf8')).toBe('1');
    expect(existsSync(o.tempDir)).toBe(false);
  });

  it('refuses an existing folder without overwrite, replaces it with overwrite', async () => {
    const out = join(tmp.dir, 'out2');
    mkdirSync(out);
    writeFileSync(join(out, 'config.json'), JSON.stringify({ quantization_config: { quant_method: 'awq' } }));
    await expect(prepareOutputDir(out)).rejects.toThrow(InvalidArgumentError);
    await expect(prepareOutputDir(out)).rejects.toThrow(/already exists.*--overwrite/);
    const o = await prepareOutputDir(out, { overwrite: true });
    writeFileSync(join(o.tempDir, 'new'), '');
    expect(readdirSync(out)).toEqual(['config.json']);
    await o.commit();
    expect(readdirSync(out)).toEqual(['new']);
    expect(readdirSync(tmp.dir).filter((n) => n.startsWith('out2.'))).toEqual([]);
    // an empty folder is replaced too
    const empty = join(tmp.dir, 'out-empty');
    mkdirSync(empty);
    await (await prepareOutputDir(empty, { overwrite: true })).commit();
    expect(readdirSync(empty)).toEqual([]);
    // AutoAWQ's quant_config.json, or our report, marks an earlier AWQ output as well
    for (const marker of ['quant_config.json', 'awq-report.json']) {
      const earlier = join(tmp.dir, `out-${marker}`);
      mkdirSync(earlier);
      writeFileSync(join(earlier, marker), '{}');
      writeFileSync(join(earlier, 'model.safetensors'), '');
      await (await prepareOutputDir(earlier, { overwrite: true })).commit();
      expect(readdirSync(earlier)).toEqual([]);
    }
  });

  it('overwrite replaces only an earlier AWQ output or an empty folder, never one that holds the input or another model', async () => {
    // A folder of models with the input in it (a typo for --out parent/model-awq), a home-like
    // folder, and a folder holding the calibration file: each refused before anything is written,
    // and at commit too, and nothing in them is touched.
    const parent = join(tmp.dir, 'models');
    mkdirSync(parent);
    const input = join(parent, 'model');
    mkdirSync(input);
    writeFileSync(join(input, 'config.json'), '{}');
    writeFileSync(join(parent, 'notes.txt'), 'keep');
    for (const opts of [{ inputDir: input, overwrite: true }, { inputDir: input }]) {
      const err = await checkOutputTarget(parent, opts).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(/holds the input .*model/);
    }
    const home = join(tmp.dir, 'home');
    mkdirSync(home);
    writeFileSync(join(home, '.bashrc'), '');
    await expect(prepareOutputDir(home, { overwrite: true })).rejects.toThrow(/is not an AWQ checkpoint \(no config\.json\).*left alone/);
    // another model (a mistyped --out naming an unquantized model, or one quantized otherwise), and
    // a config.json that does not parse: their weights and notes stay
    const models: [string, string][] = [
      ['dense', JSON.stringify({ model_type: 'llama' })],
      ['gptq', JSON.stringify({ quantization_config: { quant_method: 'gptq' } })],
      ['broken', '{"quantization_config": {"quant_method": "awq"'],
    ];
    for (const [name, config] of models) {
      const dir = join(tmp.dir, `other-${name}`);
      mkdirSync(dir);
      writeFileSync(join(dir, 'config.json'), config);
      writeFileSync(join(dir, 'NOTES.md'), 'keep');
      await expect(prepareOutputDir(dir, { overwrite: true })).rejects.toThrow(/is not an AWQ checkpoint/);
      expect(readdirSync(dir).sort()).toEqual(['NOTES.md', 'config.json']);
    }
    // config.json decides before the markers: a GPTQ model with a leftover quant_config.json stays
    const leftover = join(tmp.dir, 'other-gptq-leftover');
    mkdirSync(leftover);
    writeFileSync(join(leftover, 'config.json'), JSON.stringify({ quantization_config: { quant_method: 'gptq' } }));
    writeFileSync(join(leftover, 'quant_config.json'), '{}');
    await expect(prepareOutputDir(leftover, { overwrite: true })).rejects.toThrow(/not an AWQ checkpoint \(its config\.json's quantization_config says quant_method "gptq"\)/);
    expect(readdirSync(leftover).sort()).toEqual(['config.json', 'quant_config.json']);
    const calibDir = join(tmp.dir, 'run');
    mkdirSync(calibDir);
    writeFileSync(join(calibDir, 'config.json'), '{}');
    writeFileSync(join(calibDir, 'calib.jsonl'), '{"text": "x"}\n');
    await expect(prepareOutputDir(calibDir, { overwrite: true, inputs: [join(calibDir, 'calib.jsonl')] })).rejects.toThrow(/holds the input .*calib\.jsonl/);
    await expect(prepareOutputDir(join(calibDir, 'calib.jsonl'), { inputs: [join(calibDir, 'calib.jsonl')] })).rejects.toThrow(/is the input .*calib\.jsonl/);
    // the folder turned into a non-model folder while the run wrote: commit refuses, keeps it
    const later = join(tmp.dir, 'later');
    const o = await prepareOutputDir(later, { overwrite: true });
    mkdirSync(later);
    writeFileSync(join(later, 'photo.jpg'), '');
    await expect(o.commit()).rejects.toThrow(/not an AWQ checkpoint/);
    expect(readdirSync(later)).toEqual(['photo.jpg']);
    expect(readdirSync(parent).sort()).toEqual(['model', 'notes.txt']);
    expect(readdirSync(home)).toEqual(['.bashrc']);
  });

  it('refuses an output inside (or equal to) the input folder', async () => {
    const input = handFolder('input');
    for (const out of [input, join(input, 'awq'), join(input, 'a', 'b'), `${input}/./`]) {
      const err = await prepareOutputDir(out, { inputDir: input, overwrite: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(/input folder/);
    }
    expect(readdirSync(input).some((n) => n.includes('tmp'))).toBe(false);
    const o = await prepareOutputDir(`${input}-awq`, { inputDir: input });
    await o.abort();
    expect(existsSync(o.tempDir)).toBe(false);
  });
});

describe.skipIf(!HAVE_MODELS)('the real llama-22m (skipped when ../shared is absent)', () => {
  it('reads every tensor with the shapes its config implies', async () => {
    const m = await ModelFolder.open(LLAMA);
    const c = m.config;
    const expected = new Map<string, number[]>([['model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]], ['model.norm.weight', [c.hiddenSize]]]);
    if (!c.tieWordEmbeddings) expected.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}`;
      expected.set(`${p}.input_layernorm.weight`, [c.hiddenSize]);
      expected.set(`${p}.post_attention_layernorm.weight`, [c.hiddenSize]);
      expected.set(`${p}.self_attn.q_proj.weight`, [c.numHeads * c.headDim, c.hiddenSize]);
      expected.set(`${p}.self_attn.k_proj.weight`, [c.numKvHeads * c.headDim, c.hiddenSize]);
      expected.set(`${p}.self_attn.v_proj.weight`, [c.numKvHeads * c.headDim, c.hiddenSize]);
      expected.set(`${p}.self_attn.o_proj.weight`, [c.hiddenSize, c.numHeads * c.headDim]);
      expected.set(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, c.hiddenSize]);
      expected.set(`${p}.mlp.up_proj.weight`, [c.intermediateSize, c.hiddenSize]);
      expected.set(`${p}.mlp.down_proj.weight`, [c.hiddenSize, c.intermediateSize]);
    }
    expect(new Set(m.tensorNames())).toEqual(new Set(expected.keys()));
    expect(m.shards().length).toBe(4);
    for (const name of m.tensorNames()) {
      const info = m.info(name);
      expect(info.shape, name).toEqual(expected.get(name));
      expect(info.dtype).toBe('BF16');
      const x = await m.readF32(name);
      expect(x.length).toBe(info.shape.reduce((a, b) => a * b, 1));
      // bf16 widened exactly: the low 16 bits of every fp32 are zero, and the values are finite
      const raw = new Uint16Array((await m.readRaw(name)).buffer);
      const u = new Uint32Array(x.buffer);
      let bad = 0;
      for (let i = 0; i < u.length; i++) if (u[i] !== raw[i] << 16 >>> 0 || !Number.isFinite(x[i])) bad++;
      expect(bad, name).toBe(0);
    }
    await m.close();
  });

  it('writes it out (sharded) and reads it back bit-exactly', async () => {
    const m = await ModelFolder.open(LLAMA);
    const o = await prepareOutputDir(join(tmp.dir, 'llama-copy'), { inputDir: LLAMA });
    const w = await SafetensorsWriter.create(o.tempDir, { maxShardBytes: 10_000_000 });
    for (const name of m.tensorNames()) {
      const t = m.info(name);
      await w.add(name, t.dtype, t.shape, await m.readRaw(name));
    }
    const { shards } = await w.finish();
    expect(shards.length).toBeGreaterThan(4);
    copyFileSync(join(LLAMA, 'config.json'), join(o.tempDir, 'config.json'));
    await copyAuxiliaryFiles(LLAMA, o.tempDir);
    await o.commit();
    const back = await ModelFolder.open(o.out);
    expect(back.tensorNames().sort()).toEqual(m.tensorNames().sort());
    for (const name of m.tensorNames()) {
      expect(back.info(name).shape).toEqual(m.info(name).shape);
      expect(Buffer.compare(Buffer.from(await back.readRaw(name)), Buffer.from(await m.readRaw(name))), name).toBe(0);
    }
    expect(existsSync(join(o.out, 'tokenizer.json'))).toBe(true);
    await back.close();
    await m.close();
  });
});
