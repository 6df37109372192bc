/**
 * The AutoAWQ "GEMM" 4-bit checkpoint format (REFERENCE.md section 6): packing, reading and
 * writing. Packing runs in native code (native/core/pack.cc).
 */
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';

import { AwqError, BadCheckpointError, BadConfigError, InvalidArgumentError, ioError, NonFiniteError } from '../errors.js';
import { native } from '../native.js';
import { adapterFor, LINEAR_NAMES, type ArchitectureAdapter } from '../models/adapters.js';
import type { ModelConfig } from '../models/config.js';
import { checkModelTensors } from '../models/tensor-check.js';
import { requiredObject } from '../validate.js';
import { isFloatDtype } from './dtypes.js';
import { setTopLevelMembers } from './json-edit.js';
import { copyAuxiliaryFiles, ModelFolder, readJsonIfPresent } from './model-folder.js';
import { prepareOutputDir, type OutputDir } from './output-dir.js';
import { SafetensorsWriter, type Dtype, type TensorInfo } from './safetensors.js';

export interface AwqDims {
  outFeatures: number;
  inFeatures: number;
  groupSize: number;
}

export interface AwqPackInput extends AwqDims {
  /** [out, in], values 0..15. */
  q: Uint8Array;
  /** [out, in/g], values 0..15 (stored as they are, no offset). */
  zeros: Uint8Array;
  /** [out, in/g]; rounded to fp16 when packed. */
  scales: Float32Array;
}

export interface AwqPacked {
  /** [in, out/8]. */
  qweight: Int32Array;
  /** [in/g, out/8]. */
  qzeros: Int32Array;
  /** fp16 bit patterns, [in/g, out]. */
  scales: Uint16Array;
}

export interface AwqUnpacked {
  q: Uint8Array;
  zeros: Uint8Array;
  /** [out, in/g], the fp16 scales widened. */
  scales: Float32Array;
}

/** One quantized linear as stored: `<name>.qweight`, `.qzeros`, `.scales` and maybe `.bias`. */
export interface AwqLinearTensors {
  /** Module prefix, e.g. `model.layers.0.self_attn.q_proj`. */
  name: string;
  inFeatures: number;
  outFeatures: number;
  groupSize: number;
  qweight: Int32Array;
  qzeros: Int32Array;
  scales: Uint16Array;
  /** fp16 bit patterns, [out]. */
  bias?: Uint16Array;
}

export interface AwqQuantization {
  bits: 4;
  /**
   * As config.json says; -1 is one group per input row (per output channel, as AutoAWQ and vLLM's
   * awq_marlin read it): each linear's AwqDims.groupSize is then its own inFeatures.
   */
  groupSize: number;
  zeroPoint: boolean;
  version: 'gemm';
  modulesToNotConvert?: string[] | null;
}

function checkDims(dims: AwqDims, what = ''): void {
  const p = what ? `${what}: ` : '';
  const { outFeatures, inFeatures, groupSize } = requiredObject(dims, what || 'tensors');
  if (!Number.isSafeInteger(outFeatures) || outFeatures < 8 || outFeatures % 8 !== 0) {
    throw new InvalidArgumentError(`${p}outFeatures: expected a positive multiple of 8, got ${outFeatures}`);
  }
  if (!Number.isSafeInteger(groupSize) || groupSize < 1) {
    throw new InvalidArgumentError(`${p}groupSize: expected a positive integer, got ${groupSize}`);
  }
  if (!Number.isSafeInteger(inFeatures) || inFeatures < 1 || inFeatures % groupSize !== 0) {
    throw new InvalidArgumentError(`${p}inFeatures: expected a positive multiple of groupSize ${groupSize}, got ${inFeatures}`);
  }
}

function checkArray(v: unknown, ctor: { name: string; prototype: object }, length: number, name: string): void {
  if (!(v instanceof (ctor as unknown as new () => object))) {
    throw new InvalidArgumentError(`${name}: expected a ${ctor.name}, got ${v === null ? 'null' : typeof v === 'object' ? v.constructor.name : typeof v}`);
  }
  const got = (v as { length: number }).length;
  if (got !== length) throw new InvalidArgumentError(`${name}: expected ${length} elements, got ${got}`);
}

function checkPacked(t: AwqPacked & AwqDims, what = ''): void {
  checkDims(t, what);
  const p = what ? `${what}.` : '';
  const { inFeatures: i, outFeatures: o, groupSize: g } = t;
  checkArray(t.qweight, Int32Array, (i * o) / 8, `${p}qweight [${i}, ${o / 8}]`);
  checkArray(t.qzeros, Int32Array, ((i / g) * o) / 8, `${p}qzeros [${i / g}, ${o / 8}]`);
  checkArray(t.scales, Uint16Array, (i / g) * o, `${p}scales [${i / g}, ${o}]`);
}

/** Packs q/zeros/scales into the AWQ GEMM layout (bit-exact with REFERENCE.md section 6). */
export async function packAwq(input: AwqPackInput): Promise<AwqPacked> {
  checkDims(input);
  const { outFeatures: o, inFeatures: i, groupSize: g } = input;
  checkArray(input.q, Uint8Array, o * i, `q [${o}, ${i}]`);
  checkArray(input.zeros, Uint8Array, o * (i / g), `zeros [${o}, ${i / g}]`);
  checkArray(input.scales, Float32Array, o * (i / g), `scales [${o}, ${i / g}]`);
  const [qweight, qzeros, scales] = await native().packAwq(input.q, input.zeros, input.scales, o, i, g);
  return { qweight, qzeros, scales };
}

/** The inverse of packAwq (scales widened from fp16). */
export async function unpackAwq(input: AwqPacked & AwqDims): Promise<AwqUnpacked> {
  checkPacked(input);
  const { outFeatures: o, inFeatures: i, groupSize: g } = input;
  const [q, zeros, scales] = await native().unpackAwq(input.qweight, input.qzeros, input.scales, o, i, g);
  return { q, zeros, scales };
}

/** w [out, in] = (q - z) * s in fp32. */
export async function dequantizeAwq(input: AwqPacked & AwqDims): Promise<Float32Array> {
  checkPacked(input);
  const { outFeatures: o, inFeatures: i, groupSize: g } = input;
  return native().dequantizeAwq(input.qweight, input.qzeros, input.scales, o, i, g);
}

// ----------------------------------------------------------------------------------------------
// Reading

/**
 * A packed linear's tensors as the GEMM checkpoint names and shapes them: `<name>.qweight` I32
 * [in, out/8], `.qzeros` I32 [in/g, out/8], `.scales` F16 [in/g, out], `.bias` F16 [out].
 */
export async function addAwqLinearTensors(writer: SafetensorsWriter, t: AwqLinearTensors): Promise<void> {
  const { inFeatures: i, outFeatures: o, groupSize: g } = t;
  await writer.add(`${t.name}.qweight`, 'I32', [i, o / 8], t.qweight);
  await writer.add(`${t.name}.qzeros`, 'I32', [i / g, o / 8], t.qzeros);
  await writer.add(`${t.name}.scales`, 'F16', [i / g, o], t.scales);
  if (t.bias) await writer.add(`${t.name}.bias`, 'F16', [o], t.bias);
}

/** Parses config.json's quantization_config; anything but 4-bit AWQ GEMM is a BadConfigError. */
export function parseAwqQuantization(raw: Record<string, unknown>, source: string): AwqQuantization {
  const qc = raw.quantization_config;
  if (qc === undefined || qc === null) {
    throw new BadConfigError(`${source}: no 'quantization_config': not an AWQ checkpoint`);
  }
  return parseQuantizationFields(qc, source, 'quantization_config');
}

/**
 * The file that says how a folder is quantized: config.json's `quantization_config` (what
 * Transformers reads, and what we write), else `quant_config.json`, which older AutoAWQ
 * versions wrote and which many published AWQ checkpoints carry instead. Null when neither exists.
 */
export async function readAwqQuantization(dir: string, rawConfig: Record<string, unknown>): Promise<AwqQuantization | null> {
  if (rawConfig.quantization_config !== undefined && rawConfig.quantization_config !== null) {
    return parseAwqQuantization(rawConfig, join(dir, 'config.json'));
  }
  const legacy = await readLegacyQuantConfig(dir);
  return legacy === null ? null : parseLegacyQuantConfig(legacy, dir);
}

/** Parses the contents of `<dir>/quant_config.json` as read by readLegacyQuantConfig. */
export function parseLegacyQuantConfig(legacy: unknown, dir: string): AwqQuantization {
  // AutoAWQ's file names no method: it was only ever written for AWQ.
  const fields = typeof legacy === 'object' && legacy !== null && !Array.isArray(legacy) ? { quant_method: 'awq', ...legacy } : legacy;
  return parseQuantizationFields(fields, join(dir, LEGACY_QUANT_CONFIG), null);
}

/** `quant_config.json` of `dir` as parsed JSON (any value), or null when there is none. */
export async function readLegacyQuantConfig(dir: string): Promise<unknown> {
  return (await readJsonIfPresent(join(dir, LEGACY_QUANT_CONFIG), BadConfigError)) ?? null;
}

/** AutoAWQ's older name for the quantization settings (zero_point, q_group_size, w_bit, version). */
export const LEGACY_QUANT_CONFIG = 'quant_config.json';

/** Where the settings name the packing layout, the first one present read (none: gemm). */
const LAYOUT_KEYS = ['version', 'format', 'checkpoint_format'] as const;

function parseQuantizationFields(qc: unknown, source: string, key: string | null): AwqQuantization {
  const where = key === null ? '' : `${key}.`;
  if (typeof qc !== 'object' || qc === null || Array.isArray(qc)) {
    throw new BadConfigError(`${source}: ${key === null ? 'the settings' : `'${key}'`} is not an object`);
  }
  const o = qc as Record<string, unknown>;
  const fail = (field: string, expected: string): never => {
    const v = o[field];
    throw new BadConfigError(
      `${source}: ${where}${field}: expected ${expected}, ${v === undefined ? 'it is missing' : `got ${JSON.stringify(v)}`}`,
    );
  };
  if (o.quant_method !== 'awq') fail('quant_method', "'awq'");
  // Older AutoAWQ configs spell the fields w_bit / q_group_size.
  const bits = o.bits ?? o.w_bit;
  if (bits !== 4) fail(o.bits !== undefined ? 'bits' : 'w_bit', '4 (the only width the GEMM format packs)');
  const groupSize = o.group_size ?? o.q_group_size;
  if (typeof groupSize !== 'number' || !Number.isSafeInteger(groupSize) || (groupSize < 1 && groupSize !== -1)) {
    fail(o.group_size !== undefined ? 'group_size' : 'q_group_size', 'a positive integer or -1 (one group per row)');
  }
  const zeroPoint = o.zero_point ?? true;
  if (typeof zeroPoint !== 'boolean') fail('zero_point', 'true or false');
  // GPTQModel names the layout `format` or `checkpoint_format`: a gemv checkpoint read as gemm
  // would fail later on a shape, far from the cause.
  const layoutKey = LAYOUT_KEYS.find((k) => o[k] !== undefined && o[k] !== null);
  const layout = layoutKey === undefined ? 'gemm' : o[layoutKey];
  if (typeof layout !== 'string' || layout.toLowerCase() !== 'gemm') {
    fail(layoutKey!, "'gemm' (other AWQ layouts such as gemv, gemv_fast, llm-awq, marlin or exllama are not supported)");
  }
  const mods = o.modules_to_not_convert ?? null;
  if (mods !== null && !(Array.isArray(mods) && mods.every((m) => typeof m === 'string'))) {
    fail('modules_to_not_convert', 'null or a list of module names');
  }
  return {
    bits: 4,
    groupSize: groupSize as number,
    zeroPoint: zeroPoint as boolean,
    version: 'gemm',
    modulesToNotConvert: mods as string[] | null,
  };
}

export class AwqCheckpoint {
  private constructor(
    readonly folder: ModelFolder,
    readonly quantization: AwqQuantization,
    private readonly adapter: ArchitectureAdapter,
    private readonly linears: ReadonlyMap<string, AwqDims>,
  ) {}

  get config(): ModelConfig {
    return this.folder.config;
  }

  static async open(dir: string): Promise<AwqCheckpoint> {
    const folder = await ModelFolder.open(dir);
    try {
      const quantization = await readAwqQuantization(dir, folder.rawConfig);
      if (!quantization) {
        throw new BadConfigError(`${join(dir, 'config.json')}: no 'quantization_config' (and no ${LEGACY_QUANT_CONFIG}): not an AWQ checkpoint`);
      }
      const adapter = adapterFor(folder.config);
      const linears = new Map<string, AwqDims>();
      for (const name of folder.tensorNames()) {
        if (!name.endsWith('.qweight')) continue;
        const prefix = name.slice(0, -'.qweight'.length);
        linears.set(prefix, checkLinearShapes(folder, prefix, quantization.groupSize, adapter.biasOf(prefix)));
      }
      for (const name of folder.tensorNames()) {
        const m = /^(.*)\.(qzeros|scales)$/.exec(name);
        if (m && folder.has(`${m[1]}.qzeros`) && !linears.has(m[1])) {
          throw new BadCheckpointError(`${dir}: '${name}' has no matching '${m[1]}.qweight'`);
        }
      }
      if (linears.size === 0) throw new BadCheckpointError(`${dir}: the quantization config says AWQ, but no tensor is named '*.qweight'`);
      checkAgainstConfig(folder, adapter, linears);
      return new AwqCheckpoint(folder, quantization, adapter, linears);
    } catch (err) {
      await folder.close().catch(() => {});
      throw err;
    }
  }

  /**
   * The checkpoint is a whole model: every tensor the architecture reads is there (each decoder
   * linear packed or dense, embeddings, norms, lm_head unless tied), the unpacked ones as F32, F16
   * or BF16, with the shape config.json implies; else a BadCheckpointError naming the first one
   * missing or wrong. Returns the tensors no module of the architecture reads (Transformers drops
   * them as unexpected keys; so do the readers).
   * `loadAwq`, `awq eval` and `awq inspect` check this; the reader itself also opens a part.
   */
  checkComplete(): { unused: string[] } {
    const f = this.folder;
    const headers = {
      dir: f.dir,
      config: f.config,
      adapter: this.adapter,
      hasTensor: (name: string) => f.has(name),
      storedShape: (name: string) => f.info(name).shape,
      storedDtype: (name: string) => f.info(name).dtype,
      tensorFile: (name: string) => f.info(name).file,
      tensorNames: () => f.tensorNames(),
      absentNote: (name: string) => f.weights.absentNote(name),
    };
    return checkModelTensors(headers, new Set(this.linears.keys()));
  }

  /** Module prefixes of the quantized linears, in file order. */
  linearNames(): string[] {
    return [...this.linears.keys()];
  }

  /** Dimensions of one quantized linear (from the headers; no data read). */
  linearDims(name: string): AwqDims {
    const d = this.linears.get(name);
    if (!d) throw new InvalidArgumentError(`${this.folder.dir}: no quantized linear named '${name}'`);
    return d;
  }

  /** The linear's tensors; scales and bias as fp16 bits whatever float dtype they are stored in (readAsF16). */
  async readLinear(name: string): Promise<AwqLinearTensors> {
    const dims = this.linearDims(name);
    const f = this.folder;
    const [qweight, qzeros, scales] = await Promise.all([
      f.readRaw(`${name}.qweight`),
      f.readRaw(`${name}.qzeros`),
      readAsF16(f, `${name}.scales`, 'scales'),
    ]);
    const out: AwqLinearTensors = {
      name,
      ...dims,
      qweight: new Int32Array(qweight.buffer, qweight.byteOffset, qweight.byteLength / 4),
      qzeros: new Int32Array(qzeros.buffer, qzeros.byteOffset, qzeros.byteLength / 4),
      scales,
    };
    const bias = this.adapter.biasOf(name);
    if (bias !== undefined && f.has(bias)) out.bias = await readAsF16(f, bias, 'biases');
    return out;
  }

  /** An unquantized tensor (embeddings, norms, lm_head) as fp32. */
  readF32(name: string): Promise<Float32Array> {
    return this.folder.readF32(name);
  }

  close(): Promise<void> {
    return this.folder.close();
  }
}

export function openAwqCheckpoint(dir: string): Promise<AwqCheckpoint> {
  return AwqCheckpoint.open(dir);
}

/**
 * The decoder's linears have the shapes config.json implies: a checkpoint whose q_proj is narrower
 * than its heads would load, and fail (or compute garbage) only in a forward far from the file.
 */
function checkAgainstConfig(folder: ModelFolder, adapter: ArchitectureAdapter, linears: ReadonlyMap<string, AwqDims>): void {
  for (let i = 0; i < folder.config.numLayers; i++) {
    for (const name of LINEAR_NAMES) {
      const prefix = adapter.linear(i, name);
      const d = linears.get(prefix);
      if (!d) continue;
      const [out, inF] = adapter.linearShape(name);
      if (d.inFeatures !== inF || d.outFeatures !== out) {
        throw new BadCheckpointError(
          `${folder.info(`${prefix}.qweight`).file}: '${prefix}.qweight' holds a linear of in ${d.inFeatures}, out ` +
            `${d.outFeatures}; config.json implies in ${inF}, out ${out}`,
        );
      }
    }
  }
}

/**
 * `groupSize`: the quantization's (-1: the linear's in_features). `biasName`: the bias the
 * architecture reads for this linear (a stored one it does not read is not checked).
 */
function checkLinearShapes(folder: ModelFolder, prefix: string, groupSize: number, biasName: string | undefined): AwqDims {
  // 'float': F16, BF16 or F32 (read as fp16 by readAsF16)
  const need = (suffix: string, dtype: Dtype | 'float'): TensorInfo => {
    const name = `${prefix}.${suffix}`;
    if (!folder.has(name)) throw new BadCheckpointError(`${folder.dir}: '${prefix}.qweight' has no matching '${name}'`);
    const t = folder.info(name);
    if (dtype === 'float' ? !isFloatDtype(t.dtype) : t.dtype !== dtype) {
      throw new BadCheckpointError(`${t.file}: tensor '${name}': expected dtype ${dtype === 'float' ? 'F16, BF16 or F32' : dtype}, got ${t.dtype}`);
    }
    if (t.shape.length !== 2) throw new BadCheckpointError(`${t.file}: tensor '${name}': expected 2 dimensions, got shape ${JSON.stringify(t.shape)}`);
    return t;
  };
  const qw = need('qweight', 'I32');
  const qz = need('qzeros', 'I32');
  const sc = need('scales', 'float');
  // qweight [in, out / 8] gives the dimensions; the others must agree with it.
  const inFeatures = qw.shape[0];
  const outFeatures = qw.shape[1] * 8;
  if (inFeatures === 0 || outFeatures === 0) {
    throw new BadCheckpointError(`${qw.file}: tensor '${qw.name}': shape ${JSON.stringify(qw.shape)} is empty`);
  }
  const g = groupSize === -1 ? inFeatures : groupSize;
  if (inFeatures % g !== 0) {
    throw new BadCheckpointError(
      `${qw.file}: tensor '${qw.name}': in_features ${inFeatures} (its rows) is not a multiple of ` +
        `the quantization's group_size ${groupSize}`,
    );
  }
  const groups = inFeatures / g;
  const bad = (t: TensorInfo, expected: number[]) =>
    new BadCheckpointError(
      `${t.file}: tensor '${t.name}': expected shape ${JSON.stringify(expected)} (in=${inFeatures}, out=${outFeatures} ` +
        `from '${qw.name}' ${JSON.stringify(qw.shape)}, group_size=${groupSize}), got ${JSON.stringify(t.shape)}`,
    );
  if (qz.shape[0] !== groups || qz.shape[1] !== outFeatures / 8) throw bad(qz, [groups, outFeatures / 8]);
  if (sc.shape[0] !== groups || sc.shape[1] !== outFeatures) throw bad(sc, [groups, outFeatures]);
  if (biasName !== undefined && folder.has(biasName)) {
    const b = folder.info(biasName);
    if (b.shape.length !== 1 || b.shape[0] !== outFeatures) throw bad(b, [outFeatures]);
    if (!isFloatDtype(b.dtype)) {
      throw new BadCheckpointError(`${b.file}: tensor '${biasName}': expected a float dtype, got ${b.dtype}`);
    }
  }
  return { inFeatures, outFeatures, groupSize: g };
}

/**
 * A linear's scales or bias as fp16 bits: the int4 kernels scale and add in fp16, as the AWQ GEMM
 * kernels of vLLM and AutoAWQ do. F16 is taken as stored; BF16 and F32 (GPTQModel keeps the scales
 * of a bf16 model in bf16, vLLM's awq_marlin converts any dtype) are rounded to the nearest fp16. A
 * value beyond fp16's range is a BadCheckpointError, NaN/Inf a NonFiniteError, naming file and tensor.
 */
async function readAsF16(folder: ModelFolder, name: string, what: 'scales' | 'biases'): Promise<Uint16Array> {
  const { dtype, file } = folder.info(name);
  if (dtype === 'F16') {
    const raw = await folder.readRaw(name);
    return new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  }
  const f32 = await folder.readF32(name);
  return toHalf(f32, 'F16', name, (message) => new BadCheckpointError(`${message}: the AWQ kernels take fp16 ${what}`), `${file}: `);
}

/**
 * fp32 -> fp16/bf16 bits. NaN/Inf is a NonFiniteError naming the tensor; a finite value beyond the
 * format's range is the caller's `overflow(message)` (reading and writing advise differently).
 * `where` (a file, when reading) starts both messages.
 */
async function toHalf(
  data: Float32Array,
  dtype: 'F16' | 'BF16',
  name: string,
  overflow: (message: string) => AwqError,
  where = '',
): Promise<Uint16Array> {
  const out = new Uint16Array(data.length);
  const r = await native().convertFromF32(data, dtype, out);
  if (r.firstNonFinite >= 0) {
    throw new NonFiniteError(`${where}tensor '${name}': element ${r.firstNonFinite} is ${data[r.firstNonFinite]}`);
  }
  if (r.firstOverflow >= 0) {
    throw overflow(`${where}tensor '${name}': element ${r.firstOverflow} = ${data[r.firstOverflow]} overflows ${dtype === 'F16' ? 'fp16 (max 65504)' : 'bf16'}`);
  }
  return out;
}

// ----------------------------------------------------------------------------------------------
// Writing

/** The text of `<dir>/config.json` when it parses to `rawConfig` (else undefined: write rawConfig). */
async function sourceConfigTextOf(dir: string, rawConfig: Record<string, unknown>): Promise<string | undefined> {
  try {
    const text = await readFile(join(dir, 'config.json'), 'utf8');
    return isDeepStrictEqual(JSON.parse(text), rawConfig) ? text : undefined;
  } catch {
    return undefined; // unreadable or not JSON: the caller's rawConfig is what gets written
  }
}

export interface AwqWriterOptions {
  /** The model folder being quantized: auxiliary files come from it; `out` may not be inside it or hold it. */
  sourceDir: string;
  /** Other inputs of the run (the calibration file): `out` may not be or hold one. */
  inputs?: readonly string[];
  overwrite?: boolean;
  maxShardBytes?: number;
  /**
   * Write unquantized tensors in their source dtype (when given to addTensor) instead of fp16;
   * config.json's torch_dtype then names it (bfloat16 before float32 when both occur).
   */
  keepSourceDtype?: boolean;
}

export class AwqCheckpointWriter {
  private done = false;
  /** Dtypes other than F16 that keepSourceDtype wrote: config.json's torch_dtype follows them. */
  private readonly keptDtypes = new Set<'BF16' | 'F32'>();

  private constructor(
    private readonly output: OutputDir,
    private readonly writer: SafetensorsWriter,
    private readonly opts: AwqWriterOptions,
  ) {}

  static async create(out: string, opts: AwqWriterOptions): Promise<AwqCheckpointWriter> {
    if (!opts || typeof opts.sourceDir !== 'string') {
      throw new InvalidArgumentError('opts.sourceDir: expected the path of the source model folder');
    }
    const output = await prepareOutputDir(out, { overwrite: opts.overwrite, inputDir: opts.sourceDir, inputs: opts.inputs });
    try {
      const writer = await SafetensorsWriter.create(output.tempDir, { maxShardBytes: opts.maxShardBytes });
      return new AwqCheckpointWriter(output, writer, opts);
    } catch (err) {
      await output.abort();
      throw err;
    }
  }

  /** The final output folder. */
  get out(): string {
    return this.output.out;
  }

  async addLinear(t: AwqLinearTensors): Promise<void> {
    this.checkOpen();
    if (!t || typeof t.name !== 'string' || t.name === '') throw new InvalidArgumentError('linear: expected a module name');
    checkPacked(t, t.name);
    if (t.bias !== undefined) checkArray(t.bias, Uint16Array, t.outFeatures, `${t.name}.bias [${t.outFeatures}]`);
    await this.guard(() => addAwqLinearTensors(this.writer, t));
  }

  /**
   * An unquantized tensor, fp16 by default; with keepSourceDtype and a sourceDtype of F32 or
   * BF16 it keeps that dtype. NaN/Inf is a NonFiniteError, a finite value beyond fp16's range an
   * InvalidArgumentError, both naming the tensor (nothing is written for it).
   */
  async addTensor(name: string, shape: number[], data: Float32Array, sourceDtype?: Dtype): Promise<void> {
    this.checkOpen();
    if (!(data instanceof Float32Array)) throw new InvalidArgumentError(`tensor '${name}': data: expected a Float32Array`);
    let dtype: 'F16' | 'BF16' | 'F32' = 'F16';
    if (this.opts.keepSourceDtype && (sourceDtype === 'BF16' || sourceDtype === 'F32')) dtype = sourceDtype;
    if (dtype !== 'F16') this.keptDtypes.add(dtype);
    await this.guard(async () => {
      if (dtype === 'F32') {
        const r = await native().convertFromF32(data, 'F16', new Uint16Array(data.length));
        if (r.firstNonFinite >= 0) {
          throw new NonFiniteError(`tensor '${name}': element ${r.firstNonFinite} is ${data[r.firstNonFinite]}`);
        }
        await this.writer.add(name, 'F32', shape, data);
      } else {
        await this.writer.add(name, dtype, shape, await toHalfChecked(data, dtype, name, shape));
      }
    });
  }

  /** A small extra file (e.g. the quantization report) placed in the output folder. */
  async addFile(name: string, content: string): Promise<void> {
    this.checkOpen();
    if (!/^[\w.-]+$/.test(name) || name.endsWith('.safetensors') || name === 'config.json') {
      throw new InvalidArgumentError(`file name '${name}': expected a plain name that is not a weight file or config.json`);
    }
    await this.guard(async () => {
      try {
        await writeFile(join(this.output.tempDir, name), content);
      } catch (err) {
        throw ioError(`writing ${join(this.output.tempDir, name)}`, err);
      }
    });
  }

  /**
   * Writes config.json, copies the auxiliary files of the source folder, and renames the folder
   * into place. config.json is rawConfig with `quantization_config` (REFERENCE.md section 6) and
   * `torch_dtype` (and `dtype`, which Transformers 4.56+ writes and prefers, when present) set to
   * the dtype of the unquantized tensors: float16, or the source dtype kept by keepSourceDtype.
   * When rawConfig is the source folder's config.json as read, the source text is edited in place,
   * so every other value keeps its spelling (`10000.0` stays a float for strict config classes).
   *
   * `groupSize` -1 (one group per row: each linear's own groupSize is its in_features) is written
   * as it is; AutoAWQ and vLLM's awq_marlin kernel read it, vLLM's plain awq kernel does not.
   *
   * `zero_point` is always true: the qzeros tensor holds an explicit zero point for every group,
   * also after symmetric quantization (z = 2^(bits-1)), which is how loaders should read it. vLLM
   * uses its fast Marlin kernel for AWQ only with `zero_point: true`.
   *
   * `beforeCommit` runs when everything is written, just before the rename: an exception it throws
   * aborts the writer (the temporary folder is removed) and is rethrown as it is.
   */
  async finish(
    rawConfig: Record<string, unknown>,
    quantization: { groupSize: number; modulesToNotConvert?: string[] | null },
    beforeCommit?: () => void | Promise<void>,
  ): Promise<void> {
    this.checkOpen();
    const g = quantization?.groupSize;
    if (!Number.isSafeInteger(g) || (g < 1 && g !== -1)) {
      throw new InvalidArgumentError(`quantization.groupSize: expected a positive integer or -1 (one group per row), got ${g}`);
    }
    await this.guard(async () => {
      await this.writer.finish();
      const torchDtype = this.keptDtypes.has('BF16') ? 'bfloat16' : this.keptDtypes.has('F32') ? 'float32' : 'float16';
      const updates: Record<string, unknown> = { torch_dtype: torchDtype };
      if (Object.hasOwn(rawConfig, 'dtype')) updates.dtype = torchDtype;
      updates.quantization_config = {
        quant_method: 'awq',
        bits: 4,
        group_size: quantization.groupSize,
        zero_point: true,
        version: 'gemm',
        modules_to_not_convert: quantization.modulesToNotConvert ?? null,
      };
      const sourceText = await sourceConfigTextOf(this.opts.sourceDir, rawConfig);
      const text = sourceText !== undefined
        ? setTopLevelMembers(sourceText, updates)
        : `${JSON.stringify({ ...rawConfig, ...updates }, null, 2)}\n`;
      const configPath = join(this.output.tempDir, 'config.json');
      try {
        await writeFile(configPath, text.endsWith('\n') ? text : `${text}\n`);
      } catch (err) {
        throw ioError(`writing ${configPath}`, err);
      }
      await copyAuxiliaryFiles(this.opts.sourceDir, this.output.tempDir);
    });
    if (beforeCommit) {
      try {
        await beforeCommit();
      } catch (err) {
        await this.abort();
        throw err;
      }
    }
    await this.guard(() => this.output.commit());
    this.done = true;
  }

  /** Removes everything written so far. */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.writer.abort();
    await this.output.abort();
  }

  private checkOpen(): void {
    if (this.done) throw new InvalidArgumentError(`AWQ writer for ${this.output.out} is already finished or aborted`);
  }

  /** Argument errors leave the writer usable; I/O failures abort it (temp folder removed). */
  private async guard(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof InvalidArgumentError || err instanceof NonFiniteError)) await this.abort();
      throw err instanceof AwqError ? err : ioError(`writing ${this.output.tempDir}`, err);
    }
  }
}

async function toHalfChecked(data: Float32Array, dtype: 'F16' | 'BF16', name: string, shape: number[]): Promise<Uint16Array> {
  let n = 1;
  for (const d of shape) n *= d;
  if (!Array.isArray(shape) || n !== data.length) {
    throw new InvalidArgumentError(`tensor '${name}': shape ${JSON.stringify(shape)} does not match ${data.length} elements`);
  }
  return toHalf(data, dtype, name, (message) =>
    new InvalidArgumentError(dtype === 'F16' ? `${message}; keep the source dtype (keepSourceDtype / --keep-dtype) for this model` : message),
  );
}
