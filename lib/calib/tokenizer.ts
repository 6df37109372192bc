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
  const config = jsonObject((await read('tokenizer_config.json', false)) ?? {}, join(modelDir, 'tokenizer_config.json'));
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (err) {
    throw new BadCheckpointError(`${join(modelDir, 'tokenizer.json')}: unsupported tokenizer (${(err as Error).message})`, {
      cause: err,
    });
  }
  const vocab = (json as { model?: { vocab?: object } }).model?.vocab;
  // Optional, and read by the tokenizer only for the Llama rule below: config.json's own faults
  // are the model reader's to report.
  const optional = async (file: string) => {
    const value = await read(file, false).catch(() => undefined);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  };
  const modelConfig = await optional('config.json');
  // Legacy configs (no added_tokens_decoder) take their special tokens from special_tokens_map.json.
  const specialMap = 'added_tokens_decoder' in config ? {} : await optional('special_tokens_map.json');
  const llama = llamaSpecialTokens(config, modelConfig, specialMap, (t) => tok.token_to_id(t), join(modelDir, 'tokenizer_config.json'));
  // A token the vocabulary lacks, where the model has no unk_token it holds, comes back as no id
  // (undefined): an Int32Array would take it as id 0 and calibrate or evaluate on the wrong text.
  const idsOf = (text: string, addSpecialTokens: boolean): number[] => {
    const { ids, tokens } = tok.encode(text, { add_special_tokens: addSpecialTokens });
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i]) || ids[i] < 0) {
        throw new BadCheckpointError(
          `${join(modelDir, 'tokenizer.json')}: token ${i} of the text, ${JSON.stringify(tokens[i])}, has no id: ` +
            'it is not in the vocabulary, and the model names no unk_token that is',
        );
      }
    }
    return ids;
  };
  return {
    encode: (text, options = {}) => {
      const special = options.addSpecialTokens ?? true;
      if (!special || !llama) return idsOf(text, special);
      const ids = idsOf(text, false);
      return [...llama.prefix(), ...ids, ...llama.suffix()];
    },
    vocabSize: vocab ? Object.keys(vocab).length : undefined,
  };
}

function jsonObject(value: object, path: string): Record<string, unknown> {
  if (Array.isArray(value) || value === null || typeof value !== 'object') {
    throw new BadCheckpointError(`${path}: expected a JSON object, got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)}`);
  }
  return value as Record<string, unknown>;
}

/** tokenizer_class values Transformers 4 loads as LlamaTokenizerFast or CodeLlamaTokenizerFast. */
const LLAMA_CLASSES = new Set(['LlamaTokenizer', 'LlamaTokenizerFast', 'CodeLlamaTokenizer', 'CodeLlamaTokenizerFast']);

/**
 * The special tokens Transformers 4 adds for a Llama-family tokenizer, or undefined where
 * tokenizer.json's post-processor stands. AutoAWQ runs on Transformers 4, whose LlamaTokenizerFast
 * always replaces that post-processor with one built from tokenizer_config.json: BOS when
 * add_bos_token (default true), EOS when add_eos_token (default false). So a config with
 * add_eos_token, or a tokenizer.json without a post-processor, tokenizes calibration text
 * differently there than tokenizer.json alone would. The class is tokenizer_config.json's
 * tokenizer_class, else config.json's, else the model type's (llama and mistral: Llama's; Mistral's
 * configs name LlamaTokenizer). Other classes (PreTrainedTokenizerFast of Llama 3, Qwen2Tokenizer)
 * ignore the flags; Transformers 5 ignores them too when tokenizer.json exists: we follow AutoAWQ.
 * A token the rule needs but the vocabulary lacks fails the first encode that adds it (calibration),
 * not evaluation, which adds none.
 */
function llamaSpecialTokens(
  config: Record<string, unknown>,
  modelConfig: Record<string, unknown>,
  specialMap: Record<string, unknown>,
  idOf: (token: string) => number | undefined,
  configPath: string,
): { prefix: () => number[]; suffix: () => number[] } | undefined {
  const named = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const cls = named(config.tokenizer_class) ?? named(modelConfig.tokenizer_class);
  const llama = cls !== undefined ? LLAMA_CLASSES.has(cls) : modelConfig.model_type === 'llama' || modelConfig.model_type === 'mistral';
  if (!llama) return undefined;
  const token = (flag: 'add_bos_token' | 'add_eos_token', key: 'bos_token' | 'eos_token', byDefault: boolean, fallback: string) => {
    if (!(flag in config ? pythonTruthy(config[flag]) : byDefault)) return () => [];
    const value = key in specialMap ? specialMap[key] : key in config ? config[key] : fallback;
    const text = typeof value === 'string' ? value : (value as { content?: unknown } | null)?.content;
    const id = typeof text === 'string' ? idOf(text) : undefined;
    return () => {
      if (id === undefined) {
        throw new BadCheckpointError(`${configPath}: ${flag} needs ${key}, and ${JSON.stringify(value)} is not a token of tokenizer.json`);
      }
      return [id];
    };
  };
  return { prefix: token('add_bos_token', 'bos_token', true, '<s>'), suffix: token('add_eos_token', 'eos_token', false, '</s>') };
}

/** Python's truth value of a JSON value, as Transformers tests the flags. */
function pythonTruthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (v !== null && typeof v === 'object') return Object.keys(v).length > 0;
  return Boolean(v);
}
