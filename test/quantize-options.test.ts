/**
 * quantize() options are checked before any work, by name and value: boolean options take only
 * true or false (a string 'false' used to be coerced to true and written into the report), the
 * calibration options also with method 'rtn' (which does not read them), signal and onProgress by
 * type; evaluate() checks its options object, signal and onProgress too. None of these needs a model.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { evaluate, InvalidArgumentError, quantize, type EvaluateOptions, type QuantizeOptions } from '../dist/index.js';
import { scratchDir } from './helpers/scratch.js';

/** A model folder that does not exist: every case must fail before it is opened. */
const dir = scratchDir('awq-options-');
const base = { model: join(dir, 'no-model'), out: join(dir, 'q'), method: 'rtn' } as QuantizeOptions;

async function refused(options: unknown, message: RegExp): Promise<void> {
  const err = await quantize(options as QuantizeOptions).catch((e: unknown) => e);
  expect(err, JSON.stringify(options)).toBeInstanceOf(InvalidArgumentError);
  expect((err as Error).message).toMatch(message);
}

describe('quantize options', () => {
  it('boolean options take true or false only, naming the option and the value', async () => {
    const cases: [string, unknown, string][] = [
      ['zeroPoint', 'false', '"false"'],
      ['clip', 0, '0'],
      ['duoScaling', 'no', '"no"'],
      ['overwrite', 1, '1'],
      ['keepDtype', 'true', '"true"'],
      ['resume', {}, 'an object \\(Object\\)'],
      ['zeroPoint', null, 'null'],
    ];
    for (const [name, value, shown] of cases) {
      await refused({ ...base, [name]: value }, new RegExp(`^${name}: expected true or false, got ${shown}$`));
    }
    expect(existsSync(base.out)).toBe(false);
  });

  it('a missing or non-object options argument, model or out is an InvalidArgumentError', async () => {
    await refused(undefined, /^options \(\{ model, out, ... \}\): expected an object, got undefined$/);
    await refused(null, /^options \(\{ model, out, ... \}\): expected an object, got null$/);
    await refused('models/llama', /^options \(\{ model, out, ... \}\): expected an object, got string$/);
    await refused({ out: base.out }, /^model: expected a folder path, got undefined$/);
    await refused({ model: base.model, out: 5 }, /^out: expected a folder path, got 5$/);
  });

  it('quantization settings name the value as given (a string quoted), maxShardBytes before any work', async () => {
    await refused({ ...base, wBit: '4' }, /^wBit: expected 2, 3 or 4 \(the AutoAWQ GEMM checkpoint stores 4-bit weights\), got "4"$/);
    await refused({ ...base, wBit: 8 }, /^wBit: expected 2, 3 or 4 .*, got 8$/);
    await refused({ ...base, groupSize: '128' }, /^groupSize: expected 32, 64, 128 or -1, got "128"$/);
    await refused({ ...base, method: 'gptq' }, /^method: expected 'awq' or 'rtn', got "gptq"$/);
    // the model folder does not exist: the option is reported, not the folder
    await refused({ ...base, maxShardBytes: -1 }, /^maxShardBytes: expected a positive integer, got -1$/);
    // beyond 2^53 the writer refuses it: so does this check, before calibration and the layers
    await refused({ ...base, maxShardBytes: 2 ** 60 }, /^maxShardBytes: expected a positive integer, got 1152921504606847000$/);
  });

  it('signal must be an AbortSignal and onProgress a function', async () => {
    await refused({ ...base, signal: 'stop' }, /^signal: expected an AbortSignal, got "stop"$/);
    await refused({ ...base, signal: new AbortController() }, /^signal: expected an AbortSignal, got an object \(AbortController\)$/);
    await refused({ ...base, onProgress: 'x' }, /^onProgress: expected a function, got "x"$/);
  });

  it("calibration options are checked with method 'rtn' too", async () => {
    for (const method of ['rtn', 'awq'] as const) {
      const o = { ...base, method };
      await refused({ ...o, nSamples: -5 }, /^nSamples: expected a positive integer, got -5$/);
      await refused({ ...o, seqlen: 0 }, /^seqlen: expected a positive integer, got 0$/);
      await refused({ ...o, seqlen: 1.5 }, /^seqlen: expected a positive integer, got 1\.5$/);
      await refused({ ...o, calib: { kind: 'bogus' } }, /^calib\.kind: expected 'jsonl', 'parquet', 'text', 'texts', 'tokens' or 'default', got "bogus"$/);
      await refused({ ...o, calib: 'calib.jsonl' }, /^calib: expected an object with a kind, got "calib\.jsonl"$/);
      await refused({ ...o, calib: { kind: 'jsonl' } }, /^calib\.path: expected a file path \(calib\.kind 'jsonl'\), got undefined$/);
      await refused({ ...o, calib: { kind: 'texts', texts: 'one text' } }, /^calib\.texts: expected an array of strings/);
      await refused({ ...o, calib: { kind: 'tokens' } }, /^calib\.samples: expected an array of token id arrays/);
    }
  });
});

describe('evaluate options', () => {
  it('a missing options argument, a signal that is not an AbortSignal, an onProgress that is not a function', async () => {
    const cases: [unknown, RegExp][] = [
      [undefined, /^evaluate: options \(\{ model, text \| textPath, ... \}\): expected an object, got undefined$/],
      [null, /^evaluate: options .*: expected an object, got null$/],
      [{ model: join(dir, 'no-model'), text: 'x', signal: 'stop' }, /^signal: expected an AbortSignal, got "stop"$/],
      [{ model: join(dir, 'no-model'), text: 'x', onProgress: 5 }, /^onProgress: expected a function, got 5$/],
    ];
    for (const [options, message] of cases) {
      const err = await evaluate(options as EvaluateOptions).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toMatch(message);
    }
  });
});
