/**
 * Calibration files read as streams, so that only what the selection rule takes is read: a
 * 1 GB JSONL file (the Pile validation set AutoAWQ calibrates on) is opened, its first few hundred
 * lines parsed, and closed; it is never held in memory (it would not fit in one JavaScript
 * string either). `.gz` files are decompressed on the way; `.zst` where this Node has zstd.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { pipeline, type Readable } from 'node:stream';
import * as zlib from 'node:zlib';

import { InvalidArgumentError, ioError } from '../errors.js';

/** zstd arrived in Node 22.15 / 23.8; typed loosely so the package builds against Node 20 types. */
const createZstdDecompress = (zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream }).createZstdDecompress;

/** The file's bytes, decompressed by its extension; an error anywhere ends the returned stream with it. */
function openDecompressed(path: string): Readable {
  let decompress: NodeJS.ReadWriteStream | undefined;
  if (/\.gz$/i.test(path)) decompress = zlib.createGunzip();
  else if (/\.zst$/i.test(path)) {
    if (!createZstdDecompress) {
      throw new InvalidArgumentError(
        `${path}: this Node (${process.version}) cannot decompress zstd (Node 22.15 or later can); decompress it first (zstd -d)`,
      );
    }
    decompress = createZstdDecompress();
  }
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
