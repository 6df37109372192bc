/**
 * Calibration data (REFERENCE.md section 2): texts in order, stripped, tokenized with the
 * tokenizer's defaults; samples longer than `seqlen` or empty are skipped; stop after `nSamples`
 * accepted; concatenate and cut into floor(total / seqlen) independent blocks.
 */
import { join } from 'node:path';

import { InvalidArgumentError } from '../errors.js';
import { describeArgument } from '../validate.js';
import { packageRoot } from '../native.js';
import { readLines, readParquetColumn, readWholeText } from './text-stream.js';
import type { TextTokenizer } from './tokenizer.js';

/** Where calibration data comes from. */
export type CalibrationSource =
  | { kind: 'jsonl'; path: string; textColumn?: string }
  | { kind: 'parquet'; path: string; textColumn?: string } // a string column, rows in order
  | { kind: 'text'; path: string } // plain text, one sample per paragraph (blank-line separated)
  | { kind: 'texts'; texts: readonly string[] }
  | { kind: 'tokens'; samples: readonly (readonly number[])[]; path?: string } // pre-tokenized samples (path: the file they came from, for messages)
  | { kind: 'default' }; // the general English set shipped with the package

/** The calibration source as messages name it. */
export function describeSource(s: CalibrationSource): string {
  switch (s.kind) {
    case 'jsonl':
    case 'parquet':
    case 'text':
      return s.path;
    case 'default':
      return 'default (Brown corpus, shipped with awq)';
    case 'texts':
      return `${s.texts.length} texts`;
    case 'tokens':
      return s.path ?? `${s.samples.length} pre-tokenized samples`;
  }
}

const KINDS = ['jsonl', 'parquet', 'text', 'texts', 'tokens', 'default'] as const;

/**
 * The shape of a calibration source (its kind and the fields that kind needs), checked before any
 * work and also where it is not read (method 'rtn'); its contents are checked as they are read.
 */
export function checkCalibrationSource(source: unknown, name = 'calib'): asserts source is CalibrationSource {
  if (source === null || typeof source !== 'object' || Array.isArray(source)) {
    throw new InvalidArgumentError(`${name}: expected an object with a kind, got ${describeArgument(source)}`);
  }
  const s = source as Record<string, unknown>;
  if (!(KINDS as readonly unknown[]).includes(s.kind)) {
    throw new InvalidArgumentError(`${name}.kind: expected ${KINDS.slice(0, -1).map((k) => `'${k}'`).join(', ')} or 'default', got ${describeArgument(s.kind)}`);
  }
  const field = (key: string, ok: (v: unknown) => boolean, expected: string) => {
    if (!ok(s[key])) throw new InvalidArgumentError(`${name}.${key}: expected ${expected} (calib.kind '${String(s.kind)}'), got ${describeArgument(s[key])}`);
  };
  if (s.kind === 'jsonl' || s.kind === 'parquet' || s.kind === 'text') field('path', (v) => typeof v === 'string' && v !== '', 'a file path');
  if (s.kind === 'jsonl' || s.kind === 'parquet') field('textColumn', (v) => v === undefined || (typeof v === 'string' && v !== ''), 'a column name');
  if (s.kind === 'texts') field('texts', Array.isArray, 'an array of strings');
  if (s.kind === 'tokens') field('samples', Array.isArray, 'an array of token id arrays');
}

export const defaultCalibrationPath = join(packageRoot, 'data', 'calib-default.jsonl');

export interface CalibrationOptions {
  nSamples?: number; // 128
  seqlen?: number; // 512
  /** Every id must be below it (the model's vocab_size); without it, pre-tokenized ids below 2^31. */
  vocabSize?: number;
}

export interface CalibrationBlocks {
  /** Token ids, `blocks * seqlen`, block after block. */
  tokens: Int32Array;
  blocks: number;
  seqlen: number;
  /** Samples accepted (and seen) by the selection rule. */
  acceptedSamples: number;
  skippedTooLong: number;
  skippedEmpty: number;
  /** Tokens dropped at the end (total % seqlen). */
  droppedTokens: number;
}

/**
 * The texts of a source, in order, read as they are consumed: stopping early stops reading the
 * file (see text-stream.ts). JSONL, plain text and the shipped default set may be `.gz`.
 */
export async function* calibrationTexts(source: CalibrationSource): AsyncGenerator<string> {
  switch (source.kind) {
    case 'texts':
      yield* source.texts;
      return;
    case 'text':
      // Paragraphs need the exact separators, so the (typically small) file is read whole.
      yield* (await readWholeText(source.path)).split(/\r?\n\s*\r?\n/);
      return;
    case 'default':
    case 'jsonl': {
      const path = source.kind === 'default' ? defaultCalibrationPath : source.path;
      const column = source.kind === 'jsonl' ? (source.textColumn ?? 'text') : 'text';
      for await (const { line, number } of readLines(path)) {
        if (!line.trim()) continue;
        let row: unknown;
        try {
          // json.dump(list, indent=2) opens with a line holding only '[': the array case below
          row = line.trim() === '[' ? [] : JSON.parse(line);
        } catch (err) {
          throw new InvalidArgumentError(`${path}:${number}: not a JSON object (${(err as Error).message})`);
        }
        if (row === null || typeof row !== 'object' || Array.isArray(row)) {
          // A .json file as one array (json.dump of a list) rather than JSON lines says so, not "no field".
          const what = Array.isArray(row) ? 'a JSON array' : `a JSON ${row === null ? 'null' : typeof row}`;
          throw new InvalidArgumentError(
            `${path}:${number}: ${what}, where JSON lines hold one object per line` +
              (Array.isArray(row) ? " (an array of objects converts with jq -c '.[]')" : ''),
          );
        }
        const value = (row as Record<string, unknown>)[column];
        if (typeof value !== 'string') {
          throw new InvalidArgumentError(
            `${path}:${number}: expected a string field "${column}" (choose the field with --text-column), got ${value === undefined ? 'no such field' : typeof value}`,
          );
        }
        yield value;
      }
      return;
    }
    case 'parquet': {
      const column = source.textColumn ?? 'text';
      for await (const { value, row } of readParquetColumn(source.path, column)) {
        if (typeof value !== 'string') {
          throw new InvalidArgumentError(`${source.path}: row ${row}: expected a string in column "${column}", got ${value === null ? 'null' : typeof value}`);
        }
        yield value;
      }
      return;
    }
    case 'tokens':
      throw new InvalidArgumentError('pre-tokenized calibration data has no texts');
    default:
      throw new InvalidArgumentError(
        `calib.kind: expected 'jsonl', 'parquet', 'text', 'texts', 'tokens' or 'default', got ${JSON.stringify((source as { kind?: unknown }).kind)}`,
      );
  }
}

/** All the texts of a source, in order (not for pre-tokenized sources). */
export async function loadCalibrationTexts(source: CalibrationSource): Promise<string[]> {
  const texts: string[] = [];
  for await (const text of calibrationTexts(source)) texts.push(text);
  return texts;
}

/**
 * Every pre-tokenized id must be a token of the model before the ids become an Int32Array, where
 * 2^31 and above wrap (2^40 to 0, 2^31 to -2^31) and the run would calibrate on other tokens than
 * given. The error names the sample and the position (counting from 0), the id and the vocabulary.
 */
function checkTokenSamples(source: { samples: readonly (readonly number[])[]; path?: string }, vocabSize: number | undefined): void {
  const where = source.path ?? 'calib.samples';
  const limit = Math.min(vocabSize ?? 2 ** 31, 2 ** 31);
  const range = vocabSize === undefined ? 'the range of token ids [0, 2^31)' : `the model's vocabulary (vocab_size ${vocabSize})`;
  if (!Array.isArray(source.samples)) throw new InvalidArgumentError(`${where}: expected an array of samples, got ${describeArgument(source.samples)}`);
  // index loops, not forEach, which skips the holes of a sparse array (a hole would become token 0)
  for (let i = 0; i < source.samples.length; i++) {
    const ids: unknown = source.samples[i];
    if (!Array.isArray(ids)) throw new InvalidArgumentError(`${where}: sample ${i}: expected an array of token ids, got ${describeArgument(ids)}`);
    for (let j = 0; j < ids.length; j++) {
      const id: unknown = ids[j];
      const at = `${where}: sample ${i}, position ${j}`;
      if (!Number.isInteger(id)) throw new InvalidArgumentError(`${at}: expected an integer token id, got ${describeArgument(id)}`);
      // a safe integer: above 2^53 JSON.parse has already rounded the id to a neighbour
      if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= limit) {
        throw new InvalidArgumentError(`${at}: token id ${id} is outside ${range}`);
      }
    }
  }
}

/**
 * Python's `str.strip()`, which AutoAWQ applies to each text: its whitespace includes the
 * separators U+001C..U+001F and U+0085 and excludes U+FEFF, where JavaScript's `trim()` differs.
 */
const PY_SPACE = '[\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+';
const PY_STRIP = new RegExp(`^${PY_SPACE}|${PY_SPACE}$`, 'g');
export function pythonStrip(text: string): string {
  return text.replace(PY_STRIP, '');
}

/** Applies the AutoAWQ selection rule and cuts the accepted tokens into blocks. */
export async function buildCalibrationBlocks(
  source: CalibrationSource,
  tokenizer: TextTokenizer | undefined,
  options: CalibrationOptions = {},
): Promise<CalibrationBlocks> {
  const nSamples = options.nSamples ?? 128;
  const seqlen = options.seqlen ?? 512;
  for (const [name, v] of [['nSamples', nSamples], ['seqlen', seqlen], ['vocabSize', options.vocabSize ?? 1]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${name}: expected a positive integer, got ${v}`);
  }
  const accepted: (readonly number[])[] = [];
  let skippedTooLong = 0;
  let skippedEmpty = 0;
  const consider = (ids: readonly number[]): boolean => {
    if (ids.length === 0) skippedEmpty++;
    else if (ids.length > seqlen) skippedTooLong++;
    else accepted.push(ids);
    return accepted.length >= nSamples;
  };
  if (source.kind === 'tokens') {
    checkTokenSamples(source, options.vocabSize);
    for (const ids of source.samples) if (consider(ids)) break;
  } else {
    if (!tokenizer) throw new InvalidArgumentError('a tokenizer is needed to calibrate on text');
    for await (const raw of calibrationTexts(source)) {
      // An empty text is tokenized too, as AutoAWQ does: a tokenizer that adds BOS makes it [BOS],
      // an accepted sample; only an empty token list is skipped.
      if (consider(tokenizer.encode(pythonStrip(raw)))) break;
    }
  }
  const total = accepted.reduce((n, s) => n + s.length, 0);
  const blocks = Math.floor(total / seqlen);
  if (blocks === 0) {
    throw new InvalidArgumentError(
      `${describeSource(source)}: calibration data too short: ${accepted.length} usable samples give ${total} tokens, fewer than one block of ${seqlen} ` +
        `(${skippedTooLong} samples were longer than ${seqlen} tokens, ${skippedEmpty} empty)`,
    );
  }
  const tokens = new Int32Array(blocks * seqlen);
  let at = 0;
  for (const s of accepted) {
    for (const id of s) {
      if (at === tokens.length) break;
      tokens[at++] = id;
    }
  }
  // The tokenizer's ids are checked once they are blocks, in case it does not match the model
  // (pre-tokenized ids were checked above, before they could wrap in the Int32Array).
  const checked = options.vocabSize === undefined || source.kind === 'tokens';
  const outside = checked ? -1 : tokens.findIndex((id) => id < 0 || id >= options.vocabSize!);
  if (outside >= 0) {
    throw new InvalidArgumentError(
      `${describeSource(source)}: token id ${tokens[outside]} is outside the model's vocabulary (vocab_size ${options.vocabSize})`,
    );
  }
  return { tokens, blocks, seqlen, acceptedSamples: accepted.length, skippedTooLong, skippedEmpty, droppedTokens: total - blocks * seqlen };
}
