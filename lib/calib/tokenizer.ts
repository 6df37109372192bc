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
  const modelType = ((await read('config.json', false).catch(() => undefined)) as { model_type?: unknown } | undefined)?.model_type;
  const llama = llamaSpecialTokens(config as Record<string, unknown>, modelType, (t) => tok.token_to_id(t), join(modelDir, 'tokenizer_config.json'));
  return {
    encode: (text, options = {}) => {
      const special = options.addSpecialTokens ?? true;
      if (!special || !llama) return tok.encode(text, { add_special_tokens: special }).ids;
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      return [...llama.prefix, ...ids, ...llama.suffix];
    },
    vocabSize: vocab ? Object.keys(vocab).length : undefined,
  };
}

/** tokenizer_class values Transformers 4 loads as LlamaTokenizerFast or CodeLlamaTokenizerFast. */
const LLAMA_CLASSES = new Set(['LlamaTokenizer', 'LlamaTokenizerFast', 'CodeLlamaTokenizer', 'CodeLlamaTokenizerFast']);

/**
 * The special tokens Transformers 4 adds for a Llama-family tokenizer, or undefined where
 * tokenizer.json's post-processor stands. AutoAWQ runs on Transformers 4, whose LlamaTokenizerFast
 * (tokenizer_class LlamaTokenizer or CodeLlamaTokenizer, or none for a llama / mistral model;
 * Mistral's configs name LlamaTokenizer) always replaces that post-processor with one built from
 * tokenizer_config.json: BOS when add_bos_token (default true), EOS when add_eos_token (default
 * false). So a config with add_eos_token, or a tokenizer.json without a post-processor, tokenizes
 * calibration text differently there than tokenizer.json alone would. Other classes
 * (PreTrainedTokenizerFast of Llama 3, Qwen2Tokenizer) ignore the flags. Transformers 5 ignores
 * them too when tokenizer.json exists; we follow AutoAWQ's.
 */
function llamaSpecialTokens(
  config: Record<string, unknown>,
  modelType: unknown,
  idOf: (token: string) => number | undefined,
  configPath: string,
): { prefix: number[]; suffix: number[] } | undefined {
  const cls = config.tokenizer_class;
  const llama = typeof cls === 'string' ? LLAMA_CLASSES.has(cls) : cls === undefined && (modelType === 'llama' || modelType === 'mistral');
  if (!llama) return undefined;
  const token = (flag: 'add_bos_token' | 'add_eos_token', key: 'bos_token' | 'eos_token', byDefault: boolean, fallback: string): number[] => {
    if (!(flag in config ? pythonTruthy(config[flag]) : byDefault)) return [];
    const value = config[key] === undefined ? fallback : config[key];
    const text = typeof value === 'string' ? value : (value as { content?: unknown } | null)?.content;
    const id = typeof text === 'string' ? idOf(text) : undefined;
    if (id === undefined) {
      throw new BadCheckpointError(`${configPath}: ${flag} needs ${key}, and ${JSON.stringify(value)} is not a token of tokenizer.json`);
    }
    return [id];
  };
  return { prefix: token('add_bos_token', 'bos_token', true, '<s>'), suffix: token('add_eos_token', 'eos_token', false, '</s>') };
}

/** Python's truth value of a JSON value, as Transformers tests the flags. */
function pythonTruthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (v !== null && typeof v === 'object') return Object.keys(v).length > 0;
  return Boolean(v);
}
