/** Loads a model folder's Hugging Face tokenizer (tokenizer.json) with @huggingface/tokenizers. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Tokenizer } from '@huggingface/tokenizers';

import { BadCheckpointError } from '../errors.js';

export interface TextTokenizer {
  /** Token ids of `text`; special tokens as the tokenizer's post-processor adds them unless disabled. */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  readonly vocabSize: number | undefined;
}

export async function loadTokenizer(modelDir: string): Promise<TextTokenizer> {
  const read = async (file: string, required: boolean): Promise<object | undefined> => {
    const path = join(modelDir, file);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BadCheckpointError(
        `${path}: cannot read the tokenizer (${(err as Error).message}); a model folder needs tokenizer.json for calibration and evaluation text`,
        { cause: err },
      );
    }
    try {
      return JSON.parse(text) as object;
    } catch (err) {
      throw new BadCheckpointError(`${path}: not valid JSON (${(err as Error).message})`, { cause: err });
    }
  };
  const json = (await read('tokenizer.json', true))!;
  const config = (await read('tokenizer_config.json', false)) ?? {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (err) {
    throw new BadCheckpointError(`${join(modelDir, 'tokenizer.json')}: unsupported tokenizer (${(err as Error).message})`, {
      cause: err,
    });
  }
  const vocab = (json as { model?: { vocab?: object } }).model?.vocab;
  return {
    encode: (text, options = {}) => tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids,
    vocabSize: vocab ? Object.keys(vocab).length : undefined,
  };
}
