/**
 * A Hugging Face model folder: `config.json` plus one `model.safetensors` or shards named by
 * `model.safetensors.index.json`. Tensors are read on demand, by offset.
 */
import { constants } from 'node:fs';
import { access, chmod, copyFile, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { BadCheckpointError, BadConfigError, InvalidArgumentError, ioError } from '../errors.js';
import type { HalfArray } from '../half.js';
import { parseModelConfig, type ModelConfig } from '../models/config.js';
import { isFloatDtype, notFloatError } from './dtypes.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/**
 * A JSON file parsed, or undefined when it does not exist. Unreadable is an IoError; malformed
 * JSON an error of class `Bad` naming the file.
 */
export async function readJsonIfPresent(path: string, Bad: typeof BadConfigError | typeof BadCheckpointError): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(`reading ${path}`, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Bad(`${path}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
}

/**
 * A model path that is not a folder says so: "config.json missing" for a typo, a Hub id
 * (`meta-llama/Llama-2-7b-hf`) or a weight file given instead of its folder would send the
 * user looking for a file that was never the problem.
 */
async function requireFolder(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new InvalidArgumentError(`${dir}: no such folder (awq reads a local model folder: download the model first)`);
    }
    throw ioError(`checking ${dir}`, err);
  }
  if (!isDir) throw new InvalidArgumentError(`${dir} is a file; expected the model folder that holds config.json and the weights`);
}

/** Reads and parses `<dir>/config.json` as JSON (not yet as a model description). */
export async function readRawConfig(dir: string): Promise<Record<string, unknown>> {
  if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError(`model folder: expected a path, got ${JSON.stringify(dir) ?? String(dir)}`);
  await requireFolder(dir);
  const path = join(dir, 'config.json');
  const json = await readJsonIfPresent(path, BadConfigError);
  if (json === undefined) throw new BadConfigError(`${path}: missing (a Hugging Face model folder has a config.json)`);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new BadConfigError(`${path}: expected a JSON object`);
  }
  return json as Record<string, unknown>;
}

/**
 * The safetensors of a folder, single or sharded. As in Transformers and vLLM, the index only
 * chooses the shard files: the tensors are those the shards' headers list.
 */
export class WeightFiles {
  private constructor(
    readonly dir: string,
    /** Open files by name relative to dir, in shard order. */
    readonly files: ReadonlyMap<string, SafetensorsFile>,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    /** Whether the folder has model.safetensors.index.json. */
    readonly sharded: boolean,
    /**
     * weight_map entries naming a tensor no listed shard holds (a stale `lm_head.weight` of a tied
     * model): not an error by themselves, kept to explain a tensor found missing (absentNote).
     */
    private readonly unheld: ReadonlyMap<string, string> = new Map(),
  ) {}

  static async open(dir: string): Promise<WeightFiles> {
    const indexPath = join(dir, INDEX_FILE);
    const index = await readIndex(indexPath);
    const files = new Map<string, SafetensorsFile>();
    try {
      if (!index) {
        const single = join(dir, SINGLE_FILE);
        if (!(await isFile(single))) {
          let names: string[] = [];
          try {
            names = await readdir(dir);
          } catch (err) {
            throw ioError(`listing ${dir}`, err);
          }
          const hint = names.some((n) => n.endsWith('.bin') || n.endsWith('.pt') || n.endsWith('.pth'))
            ? ' (it has PyTorch .bin/.pt weights: convert them to safetensors first)'
            : '';
          throw new BadCheckpointError(`${dir}: no ${SINGLE_FILE} and no ${INDEX_FILE}${hint}`);
        }
        const f = await SafetensorsFile.open(single);
        files.set(SINGLE_FILE, f);
        return new WeightFiles(dir, files, new Map(f.tensors), false);
      }
      const shardNames = [...new Set(index.values())].sort();
      for (const shard of shardNames) {
        const path = join(dir, shard);
        if (!(await isFile(path))) {
          throw new BadCheckpointError(`${indexPath}: shard '${shard}' named in weight_map does not exist in ${dir}`);
        }
        files.set(shard, await SafetensorsFile.open(path));
      }
      const tensors = tensorsOfShards(indexPath, index, files);
      const unheld = new Map([...index].filter(([name]) => !tensors.has(name)));
      return new WeightFiles(dir, files, tensors, true, unheld);
    } catch (err) {
      await Promise.all([...files.values()].map((f) => f.close().catch(() => {})));
      throw err;
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new BadCheckpointError(`${this.dir}: no tensor named '${name}'${this.absentNote(name)}`);
    return t;
  }

  /** For a message about a tensor the folder lacks: what the index says of it ('' when nothing). */
  absentNote(name: string): string {
    const shard = this.unheld.get(name);
    return shard === undefined ? '' : ` (${INDEX_FILE} maps it to '${shard}', but no shard it lists holds it)`;
  }

  fileOf(name: string): SafetensorsFile {
    const t = this.info(name);
    for (const f of this.files.values()) if (f.path === t.file) return f;
    throw new BadCheckpointError(`${this.dir}: tensor '${name}': its file is not open`);
  }

  async close(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => f.close()));
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * Every tensor of the shards, in shard order. One that two shards hold is taken from the one the
 * index maps it to; when it maps it to neither, a BadCheckpointError names both.
 */
function tensorsOfShards(indexPath: string, index: ReadonlyMap<string, string>, files: ReadonlyMap<string, SafetensorsFile>): Map<string, TensorInfo> {
  const holders = new Map<string, string[]>();
  for (const [shard, f] of files) for (const name of f.tensors.keys()) holders.set(name, [...(holders.get(name) ?? []), shard]);
  const tensors = new Map<string, TensorInfo>();
  for (const [shard, f] of files) {
    for (const [name, t] of f.tensors) {
      const held = holders.get(name)!;
      const mapped = index.get(name);
      if (held.length > 1 && (mapped === undefined || !held.includes(mapped))) {
        throw new BadCheckpointError(
          `${indexPath}: tensor '${name}' is in both '${held[0]}' and '${held[1]}', and weight_map ` +
            `${mapped === undefined ? 'does not say which to read' : `maps it to '${mapped}'`}`,
        );
      }
      if (held.length === 1 || mapped === shard) tensors.set(name, t);
    }
  }
  return tensors;
}

/** weight_map of the index, or null when the folder has none. */
async function readIndex(path: string): Promise<Map<string, string> | null> {
  const json = await readJsonIfPresent(path, BadCheckpointError);
  if (json === undefined) return null;
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new BadCheckpointError(`${path}: expected an object with a 'weight_map' object`);
  }
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
      throw new BadCheckpointError(`${path}: weight_map['${name}'] = ${JSON.stringify(shard)} is not a shard file name`);
    }
  }
  return new Map(Object.entries(map as Record<string, string>));
}

export class ModelFolder {
  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly rawConfig: Record<string, unknown>,
    readonly weights: WeightFiles,
  ) {}

  /** Opens the folder: parses config.json, opens and validates every shard's header. */
  static async open(dir: string): Promise<ModelFolder> {
    const rawConfig = await readRawConfig(dir);
    const config = parseModelConfig(rawConfig, join(dir, 'config.json'));
    const weights = await WeightFiles.open(dir);
    return new ModelFolder(dir, config, rawConfig, weights);
  }

  /** Tensor names, in file order (shard by shard, by offset). */
  tensorNames(): string[] {
    return [...this.weights.tensors.keys()];
  }

  has(name: string): boolean {
    return this.weights.tensors.has(name);
  }

  info(name: string): TensorInfo {
    return this.weights.info(name);
  }

  /** The shard file names (relative to dir). */
  shards(): string[] {
    return [...this.weights.files.keys()];
  }

  /**
   * A floating-point tensor (F32, F16 or BF16) as fp32; any other dtype is a BadCheckpointError
   * naming it (an integer tensor is read with readRaw; SafetensorsFile.readF32 converts any dtype).
   */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    if (!isFloatDtype(t.dtype)) throw notFloatError(t.file, name, t.dtype);
    return this.weights.fileOf(name).readF32(name);
  }

  readRaw(name: string): Promise<Uint8Array> {
    return this.weights.fileOf(name).readRaw(name);
  }

  /** An F16 / BF16 tensor as stored (a `HalfArray`, half the memory of its widening); others as readF32. */
  async readStored(name: string): Promise<Float32Array | HalfArray> {
    const t = this.info(name);
    // Past 4 GiB one byte view of it is more than a typed array holds here: widened then.
    if ((t.dtype !== 'F16' && t.dtype !== 'BF16') || t.byteLength > 2 ** 32) return this.readF32(name);
    const data = new Uint16Array(t.byteLength / 2);
    await this.weights.fileOf(name).readInto(name, new Uint8Array(data.buffer));
    return { data, dtype: t.dtype === 'F16' ? 'fp16' : 'bf16' };
  }

  close(): Promise<void> {
    return this.weights.close();
  }
}

/** Files never carried to an output folder: weights in any format, the index, config.json. */
function isWeightOrConfig(name: string): boolean {
  return (
    name === 'config.json' ||
    name === INDEX_FILE ||
    /\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx|pkl)$/i.test(name) ||
    /\.index\.json$/i.test(name)
  );
}

/** Small files are carried; anything larger is not a tokenizer or a generation config. */
const MAX_AUXILIARY_BYTES = 100 << 20;

/** Folders of small files carried along too: Transformers' extra chat templates. */
const AUXILIARY_FOLDERS = new Set(['additional_chat_templates']);

/**
 * The tokenizer files, generation_config.json and the other small non-weight files of `srcDir`
 * (not hidden), and the files of the folders in AUXILIARY_FOLDERS, as names relative to `srcDir`
 * (folder files as `folder/name`), sorted. A symbolic link counts as the file it points to: in a
 * Hugging Face hub cache snapshot every file is one. README.md is left out: it describes the
 * source model, not the quantized one; so are files over MAX_AUXILIARY_BYTES.
 */
export async function listAuxiliaryFiles(srcDir: string): Promise<string[]> {
  const names: string[] = [];
  const take = async (rel: string) => {
    const src = join(srcDir, rel);
    try {
      if ((await stat(src)).size <= MAX_AUXILIARY_BYTES) names.push(rel);
    } catch (err) {
      throw ioError(`reading ${src}`, err);
    }
  };
  for (const name of await listNames(srcDir)) {
    if (name.startsWith('.') || isWeightOrConfig(name) || name.toLowerCase() === 'readme.md') continue;
    const kind = await fileKind(join(srcDir, name));
    if (kind === 'file') await take(name);
    else if (kind === 'folder' && AUXILIARY_FOLDERS.has(name)) {
      for (const inner of await listNames(join(srcDir, name))) {
        if (!inner.startsWith('.') && (await fileKind(join(srcDir, name, inner))) === 'file') await take(`${name}/${inner}`);
      }
    }
  }
  return names.sort();
}

/**
 * Throws the IoError a copy of the auxiliary files would meet on reading one (permissions, a
 * damaged file system): checked before hours of quantization, which copies them only at the end.
 */
export async function checkAuxiliaryFilesReadable(srcDir: string): Promise<void> {
  for (const rel of await listAuxiliaryFiles(srcDir)) {
    const src = join(srcDir, rel);
    try {
      await access(src, constants.R_OK);
    } catch (err) {
      throw ioError(`reading ${src} (a file the checkpoint carries along)`, err);
    }
  }
}

/**
 * Copies listAuxiliaryFiles(srcDir) into `dstDir`, made writable (0644) whatever the source mode.
 * Returns the names copied.
 */
export async function copyAuxiliaryFiles(srcDir: string, dstDir: string): Promise<string[]> {
  const names = await listAuxiliaryFiles(srcDir);
  for (const rel of names) {
    const dst = join(dstDir, rel);
    try {
      await mkdir(dirname(dst), { recursive: true });
      await copyFile(join(srcDir, rel), dst);
      await chmod(dst, 0o644);
    } catch (err) {
      throw ioError(`copying ${join(srcDir, rel)} to ${dst}`, err);
    }
  }
  return names;
}

async function listNames(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    throw ioError(`listing ${dir}`, err);
  }
}

/** What a path is after following symbolic links; a dangling link is 'other'. */
async function fileKind(path: string): Promise<'file' | 'folder' | 'other'> {
  try {
    const st = await stat(path);
    return st.isFile() ? 'file' : st.isDirectory() ? 'folder' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'other';
    throw ioError(`reading ${path}`, err);
  }
}

