/**
 * Calibration files read as streams, so that only what the selection rule takes is read: a
 * 1 GB JSONL file (the Pile validation set AutoAWQ calibrates on) is opened, its first few hundred
 * lines parsed, and closed; it is never held in memory (it would not fit in one JavaScript
 * string either). `.gz` and `.zst` files are decompressed on the way (zstd by Node 22.15+, else by
 * fzstd).
 * Parquet (how the Hugging Face hub serves datasets) is read one row group at a time.
 * Text is UTF-8, checked as far as it is read (utf8.ts), as `awq eval` checks its text.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { pipeline, Transform, type Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { Decompress } from 'fzstd';

import { AwqError, InvalidArgumentError, ioError } from '../errors.js';
import { notUtf8Error, utf8DecodeStream, utf8OrUndefined } from '../utf8.js';

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

/**
 * The file's text as a stream of strings: decompressed by its extension, then decoded as UTF-8
 * (invalid bytes end it with notUtf8Error). An error anywhere ends the returned stream with it.
 */
function openText(path: string): Readable {
  const streams: NodeJS.ReadWriteStream[] = [];
  if (/\.gz$/i.test(path)) streams.push(zlib.createGunzip());
  else if (/\.zst$/i.test(path)) streams.push(createZstdDecompress ? createZstdDecompress() : fzstdStream());
  streams.push(utf8DecodeStream(path));
  // pipeline destroys every stream when one fails, the output with the error; and all of them
  // when the consumer destroys the output (it stopped reading).
  return pipeline([createReadStream(path), ...streams], () => {}) as unknown as Readable;
}

/** What a failed read of calibration file `path` throws: our own errors (not UTF-8) as they are. */
function readError(path: string, err: unknown): unknown {
  return err instanceof AwqError ? err : ioError(`cannot read calibration file ${path}`, err);
}

/**
 * The lines of a text file (optionally compressed), with their 1-based numbers; stops reading
 * when the consumer stops. Read failures (missing file, corrupt compression) are IoErrors;
 * bytes that are not UTF-8 an InvalidArgumentError naming the file.
 */
export async function* readLines(path: string): AsyncGenerator<{ line: string; number: number }> {
  const stream = openText(path);
  // readline's iterator rejects with the stream's error (missing file, corrupt compression, not UTF-8).
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let number = 0;
  try {
    for await (const line of lines) {
      number++;
      yield { line, number };
    }
  } catch (err) {
    throw readError(path, err);
  } finally {
    lines.close();
    stream.destroy();
  }
}

/** The whole text of a file (optionally compressed). */
export async function readWholeText(path: string): Promise<string> {
  let text = '';
  try {
    for await (const chunk of openText(path)) text += chunk as string;
  } catch (err) {
    throw readError(path, err);
  }
  return text;
}

/** Marks a string value that is not UTF-8, so that the row can be named (hyparquet's own decoding would make it U+FFFD). */
const NOT_UTF8 = Symbol('not UTF-8');
const strictStrings = { stringFromBytes: (bytes: Uint8Array | undefined) => bytes && (utf8OrUndefined(bytes) ?? NOT_UTF8) };

/**
 * The values of one string column of a Parquet file, in row order, one row group at a time (a
 * row group is the unit the format compresses; the rest of the file is not read once the consumer
 * stops). Snappy, gzip, zstd, brotli and lz4 pages are decoded (hyparquet, hyparquet-compressors).
 * Strings must be UTF-8: the error names the first row that is not.
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
      rows = await parquetReadObjects({ file, metadata, columns: [column], rowStart: start, rowEnd: end, compressors, parsers: strictStrings });
    } catch (err) {
      throw new InvalidArgumentError(`${path}: rows ${start + 1}-${end} cannot be decoded (${(err as Error).message})`);
    }
    for (let i = 0; i < rows.length; i++) {
      const value = rows[i][column];
      if (value === NOT_UTF8) throw notUtf8Error(`${path}: row ${start + i + 1}`);
      yield { value, row: start + i + 1 };
    }
    start = end;
  }
}
