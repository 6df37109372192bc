/**
 * Streaming writer of one folder of (sharded) safetensors, the layout Hugging Face writes:
 * `model.safetensors` alone, or `model-0000i-of-0000N.safetensors` plus
 * `model.safetensors.index.json` (`weight_map`, `metadata.total_size` = sum of tensor bytes).
 *
 * Tensors are written as they come, so memory stays one tensor. A safetensors header must come
 * first but is known only when its shard is complete, so each shard's data goes to a temporary
 * file in the folder; closing the shard writes the header followed by that data into the shard
 * file and deletes the temporary one. Shard files get their final names only in finish(): a
 * folder with `.partial` files was not finished. Atomicity of the whole folder is the caller's
 * (see output-dir.ts: write into a temporary folder, rename into place).
 */
import { mkdir, open, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

import { InvalidArgumentError, ioError } from '../errors.js';
import { DTYPE_SIZE, isDtype, numel, type Dtype } from './dtypes.js';

export interface SafetensorsWriterOptions {
  /** A shard is closed when the next tensor would take it beyond this many bytes (default 5e9). */
  maxShardBytes?: number;
}

interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

interface OpenShard {
  index: number;
  dataPath: string;
  fh: FileHandle;
  entries: Entry[];
  bytes: number;
}

const COPY_CHUNK = 64 << 20;
const WRITE_CHUNK = 256 << 20;

export class SafetensorsWriter {
  private shard: OpenShard | undefined;
  /** Closed shards: temporary path and tensor names. */
  private readonly closedShards: { partialPath: string; names: string[] }[] = [];
  private readonly names = new Set<string>();
  private totalSize = 0;
  private state: 'open' | 'finished' | 'aborted' = 'open';

  private constructor(
    readonly dir: string,
    readonly maxShardBytes: number,
  ) {}

  static async create(dir: string, opts: SafetensorsWriterOptions = {}): Promise<SafetensorsWriter> {
    const max = opts.maxShardBytes ?? 5e9;
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new InvalidArgumentError(`maxShardBytes: expected a positive integer, got ${opts.maxShardBytes}`);
    }
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw ioError(`creating ${dir}`, err);
    }
    return new SafetensorsWriter(dir, max);
  }

  /** Appends one tensor; `data` holds exactly numel(shape) x dtype size bytes, little-endian. */
  async add(name: string, dtype: Dtype, shape: readonly number[], data: ArrayBufferView): Promise<void> {
    this.checkOpen();
    if (typeof name !== 'string' || name === '' || name === '__metadata__') {
      throw new InvalidArgumentError(`name: expected a non-empty tensor name, got ${JSON.stringify(name)}`);
    }
    if (this.names.has(name)) throw new InvalidArgumentError(`tensor '${name}' was already added`);
    if (!isDtype(dtype)) {
      throw new InvalidArgumentError(`tensor '${name}': dtype ${JSON.stringify(dtype)} is not one of ${Object.keys(DTYPE_SIZE).join(', ')}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new InvalidArgumentError(`tensor '${name}': shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!ArrayBuffer.isView(data)) throw new InvalidArgumentError(`tensor '${name}': data is not a typed array or DataView`);
    const bytes = numel(shape) * DTYPE_SIZE[dtype];
    if (data.byteLength !== bytes) {
      throw new InvalidArgumentError(
        `tensor '${name}': data has ${data.byteLength} bytes, shape ${JSON.stringify(shape)} of ${dtype} needs ${bytes}`,
      );
    }
    if (this.shard && this.shard.entries.length > 0 && this.shard.bytes + bytes > this.maxShardBytes) {
      await this.closeShard();
    }
    const shard = this.shard ?? (await this.openShard());
    const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let off = 0; off < view.byteLength; ) {
      const len = Math.min(WRITE_CHUNK, view.byteLength - off);
      let written: number;
      try {
        ({ bytesWritten: written } = await shard.fh.write(view, off, len, shard.bytes + off));
      } catch (err) {
        throw ioError(`writing tensor '${name}' to ${shard.dataPath}`, err);
      }
      off += written;
    }
    shard.entries.push({ name, dtype, shape: [...shape], begin: shard.bytes, end: shard.bytes + bytes });
    shard.bytes += bytes;
    this.names.add(name);
    this.totalSize += bytes;
  }

  /**
   * Closes the last shard and gives the shards their final names, plus the index when there is
   * more than one. Returns the shard file names (relative to the folder) and the tensor bytes.
   */
  async finish(): Promise<{ shards: string[]; totalSize: number }> {
    this.checkOpen();
    if (this.shard) await this.closeShard();
    if (this.closedShards.length === 0) {
      // An empty model is still a valid (empty) safetensors file.
      await this.openShard();
      await this.closeShard();
    }
    const n = this.closedShards.length;
    const finalNames = this.closedShards.map((_, i) =>
      n === 1 ? 'model.safetensors' : `model-${pad5(i + 1)}-of-${pad5(n)}.safetensors`,
    );
    try {
      for (let i = 0; i < n; i++) await rename(this.closedShards[i].partialPath, join(this.dir, finalNames[i]));
      if (n > 1) {
        const weightMap: Record<string, string> = {};
        const all: [string, string][] = [];
        this.closedShards.forEach((s, i) => s.names.forEach((t) => all.push([t, finalNames[i]])));
        all.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
        for (const [t, f] of all) weightMap[t] = f;
        const index = { metadata: { total_size: this.totalSize }, weight_map: weightMap };
        await writeFile(join(this.dir, 'model.safetensors.index.json'), `${JSON.stringify(index, null, 2)}\n`);
      }
    } catch (err) {
      throw ioError(`finishing safetensors in ${this.dir}`, err);
    }
    this.state = 'finished';
    return { shards: finalNames, totalSize: this.totalSize };
  }

  /** Closes files and deletes what this writer wrote (temporary and closed shards). */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    if (this.shard) {
      await this.shard.fh.close().catch(() => {});
      await rm(this.shard.dataPath, { force: true }).catch(() => {});
      this.shard = undefined;
    }
    for (const s of this.closedShards) await rm(s.partialPath, { force: true }).catch(() => {});
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new InvalidArgumentError(`safetensors writer for ${this.dir} is already ${this.state}`);
  }

  private async openShard(): Promise<OpenShard> {
    const index = this.closedShards.length + 1;
    const dataPath = join(this.dir, `.shard-${pad5(index)}.data.partial`);
    let fh: FileHandle;
    try {
      fh = await open(dataPath, 'w+');
    } catch (err) {
      throw ioError(`creating ${dataPath}`, err);
    }
    this.shard = { index, dataPath, fh, entries: [], bytes: 0 };
    return this.shard;
  }

  /** Writes header + data into the shard file and removes the data file. */
  private async closeShard(): Promise<void> {
    const shard = this.shard!;
    this.shard = undefined;
    const partialPath = join(this.dir, `.shard-${pad5(shard.index)}.safetensors.partial`);
    let out: FileHandle | undefined;
    try {
      const header = encodeHeader(shard.entries);
      out = await open(partialPath, 'w');
      const prefix = new Uint8Array(8 + header.byteLength);
      new DataView(prefix.buffer).setBigUint64(0, BigInt(header.byteLength), true);
      prefix.set(header, 8);
      await out.write(prefix, 0, prefix.byteLength, 0);
      const buf = new Uint8Array(Math.min(COPY_CHUNK, Math.max(1, shard.bytes)));
      for (let pos = 0; pos < shard.bytes; ) {
        const { bytesRead } = await shard.fh.read(buf, 0, Math.min(buf.byteLength, shard.bytes - pos), pos);
        if (bytesRead === 0) throw new Error(`${shard.dataPath} is shorter than the bytes written to it`);
        for (let w = 0; w < bytesRead; ) {
          const { bytesWritten } = await out.write(buf, w, bytesRead - w, prefix.byteLength + pos + w);
          w += bytesWritten;
        }
        pos += bytesRead;
      }
      await out.close();
      out = undefined;
      await shard.fh.close();
      await rm(shard.dataPath, { force: true });
    } catch (err) {
      await out?.close().catch(() => {});
      await shard.fh.close().catch(() => {});
      await rm(shard.dataPath, { force: true }).catch(() => {});
      await rm(partialPath, { force: true }).catch(() => {});
      throw ioError(`writing ${partialPath}`, err);
    }
    this.closedShards.push({ partialPath, names: shard.entries.map((e) => e.name) });
  }
}

/** The JSON header, padded with spaces so the data starts 8-byte aligned. */
function encodeHeader(entries: readonly Entry[]): Uint8Array {
  const obj: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  for (const e of entries) obj[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.end] };
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const padded = new Uint8Array(Math.ceil(json.byteLength / 8) * 8).fill(0x20);
  padded.set(json);
  return padded;
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}
