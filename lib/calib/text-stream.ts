/**
 * Calibration files read as streams, so that only what the selection rule takes is read: a
 * 1 GB JSONL file (the Pile validation set AutoAWQ calibrates on) is opened, its first few hundred
 * lines parsed, and closed; it is never held in memory (it would not fit in one JavaScript
 * string either). `.gz` and `.zst` files are decompressed on the way (zstd by Node 22.15+, else by
 * fzstd).
 * Parquet (how the Hugging Face hub serves datasets) is read one row group at a time.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { pipeline, Transform, type Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { Decompress } from 'fzstd';

import { InvalidArgumentError, ioError } from '../errors.js';

/** zstd arrived in Node 22.15 / 23.8; typed loosely so the package builds against Node 20 types. */
const createZstdDecompress = (zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream }).createZstdDecompress;

/** zstd in JavaScript (fzstd) for older Nodes, as a stream. */
function fzstdStream(): Transform {
  let out: Transform;
  const d = new Decompress((data) => out.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength)));
  out = new Transform({
    transform(chunk: Buffer, _enc, done) {
      try {
        d.push(chunk);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
    flush(done) {
      try {
        d.push(new Uint8Array(0), true);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
  });
  return out;
}

/** The file's bytes, decompressed by its extension; an error anywhere ends the returned stream with it. */
function openDecompressed(path: string): Readable {
  let decompress: NodeJS.ReadWriteStream | undefined;
  if (/\.gz$/i.test(path)) decompress = zlib.createGunzip();
  else if (/\.zst$/i.test(path)) decompress = createZstdDecompress ? createZstdDecompress() : fzstdStream();
  const file = createReadStream(path);
  if (!decompress) return file;
  // pipeline destroys both streams when either fails, the output with the error.
  return pipeline(file, decompress, () => {}) as unknown as Readable;
}

/**
 * The lines of a text file (optionally compressed), with their 1-based numbers; stops reading
 * when the consumer stops. Read failures (missing file, corrupt compression) are IoErrors.
 */
export async function* readLines(path: string): AsyncGenerator<{ line: string; number: number }> {
  const stream = openDecompressed(path);
  // readline's iterator rejects with the stream's error (missing file, corrupt compression).
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let number = 0;
  try {
    for await (const line of lines) {
      number++;
      yield { line, number };
    }
  } catch (err) {
    throw ioError(`cannot read calibration file ${path}`, err);
  } finally {
    lines.close();
    stream.destroy();
  }
}

/** The whole text of a file (optionally compressed). */
export async function readWholeText(path: string): Promise<string> {
  const stream = openDecompressed(path);
  stream.setEncoding('utf8');
  let text = '';
  try {
    for await (const chunk of stream) text += chunk as string;
  } catch (err) {
    throw ioError(`cannot read calibration file ${path}`, err);
  }
  return text;
}

/**
 * The values of one string column of a Parquet file, in row order, one row group at a time (a
 * row group is the unit the format compresses; the rest of the file is not read once the consumer
 * stops). Snappy, gzip, zstd, brotli and lz4 pages are decoded (hyparquet, hyparquet-compressors).
 */
export async function* readParquetColumn(path: string, column: string): AsyncGenerator<{ value: unknown; row: number }> {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } = await import('hyparquet');
  const { compressors } = await import('hyparquet-compressors');
  let file: Awaited<ReturnType<typeof asyncBufferFromFile>>;
  try {
    file = await asyncBufferFromFile(path);
  } catch (err) {
    throw ioError(`cannot read calibration file ${path}`, err);
  }
  let metadata: Awaited<ReturnType<typeof parquetMetadataAsync>>;
  try {
    metadata = await parquetMetadataAsync(file);
  } catch (err) {
    throw new InvalidArgumentError(`${path}: not a Parquet file (${(err as Error).message})`);
  }
  const columns = parquetSchema(metadata).children.map((c) => c.element.name);
  if (!columns.includes(column)) {
    throw new InvalidArgumentError(
      `${path}: no column "${column}" (it has ${columns.map((c) => `"${c}"`).join(', ')}); choose it with --text-column`,
    );
  }
  let start = 0;
  for (const group of metadata.row_groups) {
    const end = start + Number(group.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await parquetReadObjects({ file, metadata, columns: [column], rowStart: start, rowEnd: end, compressors });
    } catch (err) {
      throw new InvalidArgumentError(`${path}: rows ${start + 1}-${end} cannot be decoded (${(err as Error).message})`);
    }
    for (let i = 0; i < rows.length; i++) yield { value: rows[i][column], row: start + i + 1 };
    start = end;
  }
}
