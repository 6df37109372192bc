/**
 * What `evaluate` / `awq eval` take as text and windows: UTF-8 only (a binary or Latin-1 file used to
 * be scored as replacement characters), and more windows asked for than the text holds evaluates
 * those it holds, says so, and reports both counts.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { AbortedError, AwqError, backends, BadCheckpointError, evaluate, ModelFolder, SafetensorsWriter, setThreads, InvalidArgumentError, NonFiniteError, type ProgressEvent } from '../dist/index.js';
import { tokenizeInWorker } from '../dist/calib/tokenize-in-worker.js';
import { hasShared, sharedSkipReason } from './helpers/shared.js';
import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

describe.skipIf(!hasShared)(`evaluation text and windows${hasShared ? '' : ` (skipped: ${sharedSkipReason})`}`, () => {
  it('refuses text that is not UTF-8, naming the file', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const file = join(scratchDir('awq-eval-'), 'latin1.txt');
    writeFileSync(file, Buffer.from('caf\xe9 au lait, '.repeat(200), 'latin1'));
    const err = await evaluate({ model, textPath: file, seqlen: 64 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toBe(`${file}: not UTF-8 text (convert it first, e.g. with iconv)`);
  });

  it('tokenizer faults (tokenized in a worker) arrive as the same typed errors; an aborted signal stops before it', async () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
    const missing = await writeTinyModel({ layers: 1 });
    rmSync(join(missing, 'tokenizer.json'));
    const err = await evaluate({ model: missing, text, seqlen: 64 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect((err as Error).message).toMatch(/tokenizer\.json: cannot read the tokenizer .*needs tokenizer\.json for calibration and evaluation text/);
    const broken = await writeTinyModel({ layers: 1 });
    writeFileSync(join(broken, 'tokenizer.json'), '{"model": ');
    const parse = await evaluate({ model: broken, text, seqlen: 64 }).catch((e: unknown) => e);
    expect(parse).toBeInstanceOf(BadCheckpointError);
    expect((parse as Error).message).toMatch(/tokenizer\.json: not valid JSON \(.+\)$/);
    // The cause is the worker's error as it reported it, with the SyntaxError beneath it.
    const cause = (parse as Error).cause as Error & { code?: unknown };
    expect(cause).toMatchObject({ name: 'BadCheckpointError', code: 'ERR_AWQ_BAD_CHECKPOINT', message: (parse as Error).message });
    expect(cause.stack).toMatch(/^BadCheckpointError: .*\n\s+at .*tokenizer\.js/);
    expect((cause.cause as Error).name).toBe('SyntaxError');
    const aborted = await evaluate({ model: broken, text, seqlen: 64, signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(aborted).toBeInstanceOf(AbortedError);
  });

  it('reports the thread count it ran with (threads was applied after the description was made)', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
    const before = backends().cpu.threads;
    try {
      for (const threads of [1, 2, 1]) {
        const r = await evaluate({ model, text, seqlen: 64, windows: 1, threads });
        expect(r.threads).toBe(threads);
        expect(r.backend).toMatch(new RegExp(`\\b${threads} threads?\\)`));
      }
    } finally {
      setThreads(before);
    }
  });

  it('more windows than the text holds: evaluates those, with a note and availableWindows', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const events: ProgressEvent[] = [];
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
    const r = await evaluate({ model, text, seqlen: 64, windows: 1000, onProgress: (e) => events.push(e) });
    expect(r.windows).toBe(r.availableWindows);
    expect(r.availableWindows).toBeGreaterThan(0);
    expect(events.some((e) => e.stage === 'notice' && e.message === `1000 windows asked for, the text holds ${r.availableWindows}: evaluating ${r.availableWindows}`)).toBe(true);
    const one = await evaluate({ model, text, seqlen: 64, windows: 1 });
    expect([one.windows, one.availableWindows]).toEqual([1, r.availableWindows]);
  });

  it('an fp16 / bf16 embedding and lm_head, held as stored, give bitwise the result of their fp32 widening, tied or not, down to a last chunk of one token', async () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
    /** The same model with every tensor stored as its F32 widening. */
    const widened = async (src: string) => {
      const dir = scratchDir('awq-eval-wide-');
      const folder = await ModelFolder.open(src);
      const w = await SafetensorsWriter.create(dir, {});
      for (const name of folder.tensorNames()) await w.add(name, 'F32', folder.info(name).shape, await folder.readF32(name));
      await w.finish();
      await folder.close();
      for (const f of readdirSync(src)) if (f === 'config.json' || f.startsWith('tokenizer')) copyFileSync(join(src, f), join(dir, f));
      return dir;
    };
    for (const dtype of ['F16', 'BF16'] as const) {
      for (const tie of [true, false]) {
        const model = await writeTinyModel({ layers: 1, tie, dtypes: { 'model.embed_tokens.weight': dtype, 'lm_head.weight': dtype } });
        const wide = await widened(model);
        // 257 tokens a window, one window: the last lm_head chunk is one token (the matrix-vector path)
        for (const [seqlen, windows] of [[64, undefined], [257, 1], [129, 3]] as const) {
          const [half, full] = [await evaluate({ model, text, seqlen, windows }), await evaluate({ model: wide, text, seqlen, windows })];
          expect(half.meanNll, `${dtype} tie ${tie} seqlen ${seqlen}`).toBe(full.meanNll);
        }
      }
    }
    // a NaN in a bf16 lm_head: named as an fp32 one is
    const nan = await writeTinyModel({ layers: 1, tie: false, nanTensor: 'lm_head.weight', dtypes: { 'lm_head.weight': 'BF16' } });
    const err = await evaluate({ model: nan, text, seqlen: 64, windows: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toMatch(/: tensor 'lm_head\.weight': element \d+ is NaN$/);
  });

  it('checks the model before any work: a config that disagrees with the embedding, NaN in the embedding, an overflowing forward', async () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
    // config.json says vocab 100, the embedding has 8192 rows (a RangeError or a message about lm_head before)
    const model = await writeTinyModel({ layers: 1 });
    const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
    writeFileSync(join(model, 'config.json'), JSON.stringify({ ...config, vocab_size: 100 }));
    const shape = await evaluate({ model, text, seqlen: 64, windows: 1 }).catch((e: unknown) => e);
    expect(shape).toBeInstanceOf(BadCheckpointError);
    expect((shape as Error).message).toBe(`${model}: tensor model.embed_tokens.weight has shape [8192,128], the config implies [100,128]`);
    // NaN in the tied embedding: named as stored (it was 'lm_head.weight', after every layer had run)
    const nan = await writeTinyModel({ layers: 1, nanTensor: 'model.embed_tokens.weight' });
    const events: ProgressEvent[] = [];
    const err = await evaluate({ model: nan, text, seqlen: 64, windows: 1, onProgress: (e) => events.push(e) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toBe(`${nan}: tensor 'model.embed_tokens.weight': element ${(8192 * 128) >> 1} is NaN`);
    expect(events.some((e) => e.stage === 'eval')).toBe(false);
    // an untied lm_head of 1e30: logits far beyond the others, so exp(mean NLL) overflows (JSON printed null)
    const huge = await writeTinyModel({ layers: 1, tie: false, scaleTensor: { name: 'lm_head.weight', by: 1e30 } });
    const over = await evaluate({ model: huge, text, seqlen: 64, windows: 1 }).catch((e: unknown) => e);
    expect(over).toBeInstanceOf(NonFiniteError);
    expect((over as Error).message).toMatch(/the mean negative log-likelihood over 1 windows is .* nats per token, so the perplexity is not a finite number/);
  });
});

describe('tokenizer worker errors', () => {
  it('an error the tokenizer library throws on the text is a BadCheckpointError keeping its name and message, the worker\'s error as cause', async () => {
    const dir = join(scratchDir('awq-tokw-'), 'model');
    mkdirSync(dir);
    // Loads, but encoding fails inside @huggingface/tokenizers (a post-processor of null).
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
      model: { type: 'WordLevel', vocab: { '[UNK]': 0, hello: 1, world: 2 }, unk_token: '[UNK]' },
      added_tokens: [], normalizer: null, pre_tokenizer: { type: 'Whitespace' }, decoder: null,
      post_processor: { type: 'Sequence', processors: [null] },
    }));
    const err = await tokenizeInWorker(dir, 'hello world', { addSpecialTokens: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadCheckpointError);
    expect(err).toBeInstanceOf(AwqError);
    expect((err as Error).message).toMatch(/tokenizer\.json: the tokenizer failed \(TypeError: Cannot read properties of null \(reading 'post_process'\)\)$/);
    const cause = (err as Error).cause as Error;
    expect(cause).toBeInstanceOf(Error);
    expect(cause.name).toBe('TypeError');
    expect(cause.message).toBe("Cannot read properties of null (reading 'post_process')");
    expect(cause.stack).toMatch(/^TypeError: Cannot read properties of null[^\n]*\n\s+at /);
  });
});
