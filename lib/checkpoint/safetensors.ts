/**
 * Safetensors files: reading by offset (never the whole file) with the validation of the
 * reference implementation, and a streaming writer of sharded folders.
 *
 * Format: u64 little-endian header length n, n bytes of JSON header
 * `{ "__metadata__"?: {string: string}, name: { dtype, shape, data_offsets: [begin, end] } }`,
 * then the raw little-endian row-major data; offsets are relative to the end of the header.
 */
import { open, type FileHandle } from 'node:fs/promises';

import { BadCheckpointError, InvalidArgumentError, ioError } from '../errors.js';
import { native } from '../native.js';
import { DTYPE_SIZE, isDtype, numel, type Dtype } from './dtypes.js';

export { DTYPE_SIZE, isDtype, numel, type Dtype } from './dtypes.js';
export { SafetensorsWriter, type SafetensorsWriterOptions } from './safetensors-writer.js';

/** A tensor's header entry. Frozen: the reader locates the data by it, so a change would misread. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** The file that holds the tensor. */
  readonly file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  readonly dataOffset: number;
  readonly byteLength: number;
}

/** The reference implementation's limit on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Reads are issued in chunks of this size (Node cannot read 2 GiB at once), several in flight. */
const READ_CHUNK = 16 << 20;
const READS_IN_FLIGHT = 4;

/** One safetensors file, open for reading. Close it when done. */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    /** `__metadata__` of the header (string to string), or null when absent. */
    readonly metadata: Readonly<Record<string, string>> | null,
    /** Length of the JSON header in bytes (data starts at 8 + headerLength). */
    readonly headerLength: number,
    readonly fileSize: number,
  ) {}

  /** Opens and validates `path`; throws `BadCheckpointError` naming the file (and tensor). */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BadCheckpointError(`${path}: file not found`, { cause: err });
      }
      throw ioError(`opening ${path}`, err);
    }
    try {
      const { size } = await fh.stat();
      const { tensors, metadata, headerLength } = await readHeader(fh, path, size);
      return new SafetensorsFile(path, fh, tensors, metadata, headerLength, size);
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  /** Information on one tensor; `BadCheckpointError` when absent. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new BadCheckpointError(`${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** The tensor's bytes, exactly as stored (little-endian). Limited to 4 GiB (a V8 limit). */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    if (t.byteLength > 2 ** 32) {
      throw new InvalidArgumentError(
        `${this.path}: tensor '${name}' has ${t.byteLength} bytes; readRaw returns at most 4 GiB ` +
          '(a JavaScript typed array limit): use readF32 or readInto',
      );
    }
    const out = new Uint8Array(t.byteLength);
    await this.readInto(name, out);
    return out;
  }

  /** Reads the tensor's bytes into `dst` (exactly byteLength bytes). */
  async readInto(name: string, dst: Uint8Array): Promise<void> {
    const t = this.info(name);
    if (dst.byteLength !== t.byteLength) {
      throw new InvalidArgumentError(`dst: expected ${t.byteLength} bytes for tensor '${name}', got ${dst.byteLength}`);
    }
    await this.readRange(t.dataOffset, dst, name);
  }

  /**
   * The tensor as fp32: F32 as stored, F16/BF16 widened in native code (exact), F64 rounded,
   * integers and BOOL as numbers (I64 beyond 2^24 loses precision, as any fp32 would).
   */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    const n = numel(t.shape);
    if (n > 2 ** 32) {
      throw new InvalidArgumentError(`${this.path}: tensor '${name}' has ${n} elements, more than a Float32Array holds`);
    }
    const out = new Float32Array(n);
    switch (t.dtype) {
      case 'F32':
        await this.readRange(t.dataOffset, new Uint8Array(out.buffer), name);
        return out;
      case 'F16':
      case 'BF16':
        await this.readHalfInto(t, out);
        return out;
      default: {
        // 8/4/2/1-byte integers and F64: rare and small (position ids, masks); convert in JS.
        const raw = await this.readRaw(name);
        const view = typedView(t.dtype, raw);
        for (let i = 0; i < n; i++) out[i] = Number(view[i]);
        return out;
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  /** fp16/bf16 -> fp32 in chunks: the read of chunk k+1 overlaps the conversion of chunk k. */
  private async readHalfInto(t: TensorInfo, out: Float32Array): Promise<void> {
    const chunkElems = (READ_CHUNK * READS_IN_FLIGHT) / 2;
    const scratch = [0, 1].map(() => new Uint16Array(Math.min(out.length, chunkElems)));
    const dtype = t.dtype as 'F16' | 'BF16';
    let pending: Promise<void> = Promise.resolve();
    for (let start = 0, k = 0; start < out.length; start += chunkElems, k++) {
      const len = Math.min(chunkElems, out.length - start);
      const buf = scratch[k & 1].subarray(0, len);
      const bytes = new Uint8Array(buf.buffer, 0, len * 2);
      await Promise.all([this.readRange(t.dataOffset + start * 2, bytes, t.name), pending]);
      pending = native().convertToF32(buf, dtype, out.subarray(start, start + len));
    }
    await pending;
  }

  /** Fills dst from absolute file position `pos`, several chunked reads in flight. */
  private async readRange(pos: number, dst: Uint8Array, name: string): Promise<void> {
    if (this.closed) throw new InvalidArgumentError(`${this.path}: file is closed`);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < dst.byteLength) {
        const begin = next;
        const end = Math.min(dst.byteLength, begin + READ_CHUNK);
        next = end;
        let done = begin;
        while (done < end) {
          let bytesRead: number;
          try {
            ({ bytesRead } = await this.fh.read(dst, done, end - done, pos + done));
          } catch (err) {
            throw ioError(`reading tensor '${name}' of ${this.path}`, err);
          }
          if (bytesRead === 0) {
            throw new BadCheckpointError(`${this.path}: tensor '${name}': file truncated (changed since it was opened?)`);
          }
          done += bytesRead;
        }
      }
    };
    const workers = Math.min(READS_IN_FLIGHT, Math.ceil(dst.byteLength / READ_CHUNK));
    await Promise.all(Array.from({ length: workers }, worker));
  }
}

function typedView(dtype: Dtype, raw: Uint8Array): ArrayLike<number | bigint> {
  // readRaw allocates a fresh buffer, so the view is aligned.
  const { buffer, byteOffset, byteLength } = raw;
  switch (dtype) {
    case 'F64': return new Float64Array(buffer, byteOffset, byteLength / 8);
    case 'I64': return new BigInt64Array(buffer, byteOffset, byteLength / 8);
    case 'I32': return new Int32Array(buffer, byteOffset, byteLength / 4);
    case 'I16': return new Int16Array(buffer, byteOffset, byteLength / 2);
    case 'I8': return new Int8Array(buffer, byteOffset, byteLength);
    case 'U8':
    case 'BOOL': return raw;
    case 'F32': return new Float32Array(buffer, byteOffset, byteLength / 4);
    case 'F16':
    case 'BF16': throw new Error('unreachable: half types are widened natively');
  }
}

async function readExactly(fh: FileHandle, path: string, length: number, position: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(buf, done, length - done, position + done));
    } catch (err) {
      throw ioError(`reading ${path}`, err);
    }
    if (bytesRead === 0) throw new BadCheckpointError(`${path}: file truncated while reading the header`);
    done += bytesRead;
  }
  return buf;
}

interface Header {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
  headerLength: number;
}

/** Reads and validates the header the way the reference implementation does. */
async function readHeader(fh: FileHandle, path: string, fileSize: number): Promise<Header> {
  const bad = (msg: string) => new BadCheckpointError(`${path}: ${msg}`);
  if (fileSize < 8) throw bad(`file of ${fileSize} bytes is too small to be safetensors (truncated?)`);
  const lenBytes = await readExactly(fh, path, 8, 0);
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw bad(`header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
  }
  const headerLength = Number(n64);
  if (8 + headerLength > fileSize) {
    throw bad(`header length ${headerLength} goes beyond the end of the file (${fileSize} bytes; truncated?)`);
  }
  const raw = await readExactly(fh, path, headerLength, 8);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw bad('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(`header is not valid JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad('header is not a JSON object');

  let metadata: Record<string, string> | null = null;
  const entries: TensorInfo[] = [];
  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw bad('__metadata__ is not an object of strings');
      }
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw bad(`__metadata__.${k} is not a string`);
      }
      metadata = value as Record<string, string>;
      continue;
    }
    const badT = (msg: string) => bad(`tensor '${name}': ${msg}`);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw badT('entry is not an object');
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (!isDtype(dtype)) {
      throw badT(
        typeof dtype === 'string'
          ? `unsupported dtype '${dtype}' (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`
          : 'dtype is missing or not a string',
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw badT(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw badT(`data_offsets ${JSON.stringify(offsets)} is not a pair [begin, end] of non-negative integers`);
    }
    // Each tensor's own offsets first, so that the error names the tensor whose entry is wrong
    // (the tiling check below can only name neighbours).
    const [begin, end] = offsets as number[];
    if (end < begin) throw badT(`data_offsets [${begin}, ${end}] ends before it begins`);
    if (end > dataLength) {
      throw badT(
        `data_offsets [${begin}, ${end}] end beyond the data section, which holds ${dataLength} bytes ` +
          `(a file of ${fileSize} bytes with a header of ${headerLength}): truncated, or a wrong entry`,
      );
    }
    const count = numel(shape as number[]);
    const expected = count * DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(expected)) throw badT(`shape ${JSON.stringify(shape)} is too large`);
    if (end - begin !== expected) {
      throw badT(
        `byte length ${end - begin} (data_offsets [${begin}, ${end}]) does not match shape ` +
          `${JSON.stringify(shape)} x ${DTYPE_SIZE[dtype]} bytes (${dtype}) = ${expected}`,
      );
    }
    entries.push({
      name, dtype, shape: shape as number[], file: path, dataOffset: dataStart + begin, byteLength: expected,
    });
  }

  // Sorted by offset, the tensors must tile the data section exactly: no overlap, no hole. Each
  // entry is in range by now, so what is wrong here is between tensors: name both sides.
  entries.sort((a, b) => a.dataOffset - b.dataOffset || a.byteLength - b.byteLength);
  const range = (t: TensorInfo) => `tensor '${t.name}' (data_offsets [${t.dataOffset - dataStart}, ${t.dataOffset - dataStart + t.byteLength}])`;
  let prev: TensorInfo | undefined; // the tensor that reaches furthest so far
  let covered = 0; // bytes of the data section tiled so far, relative to its start
  for (const t of entries) {
    const begin = t.dataOffset - dataStart;
    if (begin < covered) {
      const both = t.byteLength === 0
        ? 'the empty one begins inside the other'
        : `bytes [${begin}, ${Math.min(covered, begin + t.byteLength)}) of the data section are in both`;
      throw bad(`${range(t)} overlaps ${range(prev!)}: ${both}`);
    }
    if (begin > covered) {
      throw bad(
        `bytes [${covered}, ${begin}) of the data section belong to no tensor: a hole ` +
          (prev ? `between ${range(prev)} and ${range(t)}` : `before ${range(t)}, the first`),
      );
    }
    covered = begin + t.byteLength;
    prev = t;
  }
  if (covered !== dataLength) {
    throw bad(
      `bytes [${covered}, ${dataLength}) of the data section belong to no tensor: trailing bytes ` +
        (prev ? `after ${range(prev)}, the last` : '(the header lists no tensor)'),
    );
  }
  const tensors = new Map<string, TensorInfo>();
  for (const t of entries) tensors.set(t.name, Object.freeze({ ...t, shape: Object.freeze([...t.shape]) }));
  return { tensors, metadata, headerLength };
}
