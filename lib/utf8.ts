/**
 * Text files are read as UTF-8, strictly: a lenient decoder turns invalid bytes into U+FFFD, so a
 * Latin-1 or binary file went through as text (evaluation scored it, calibration tokenized it). One
 * check and one message for every text file the package reads: `awq eval`'s and calibration's.
 */
import { Transform } from 'node:stream';

import { InvalidArgumentError } from './errors.js';

/** The error for a file (or a part of one: `where`) whose bytes are not UTF-8, with what to do about it. */
export function notUtf8Error(where: string): InvalidArgumentError {
  return new InvalidArgumentError(`${where}: not UTF-8 text (convert it first, e.g. with iconv)`);
}

const strict = new TextDecoder('utf-8', { fatal: true });

/** The text of `bytes`, or undefined when they are not UTF-8. */
export function utf8OrUndefined(bytes: Uint8Array): string | undefined {
  try {
    return strict.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The text of a whole file's bytes (`path` names it in the error). */
export function decodeUtf8(bytes: Uint8Array, path: string): string {
  const text = utf8OrUndefined(bytes);
  if (text === undefined) throw notUtf8Error(path);
  return text;
}

/**
 * A stream from bytes to strings that ends with notUtf8Error(path) at the first chunk holding
 * invalid UTF-8, so a file is checked as far as it is read, never further. A character split
 * between two chunks is completed by the next one (TextDecoder's stream mode); one cut off by the
 * end of the file is invalid. A byte order mark at the start is dropped, as `awq eval` drops it.
 */
export function utf8DecodeStream(path: string): Transform {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const decode = (bytes: Uint8Array | undefined, done: (err?: Error | null, text?: string) => void) => {
    let text: string;
    try {
      text = bytes ? decoder.decode(bytes, { stream: true }) : decoder.decode();
    } catch {
      done(notUtf8Error(path));
      return;
    }
    done(null, text || undefined);
  };
  return new Transform({
    readableObjectMode: true, // strings out, as decoded: readline and readWholeText take them as they are
    transform: (chunk: Buffer, _encoding, done) => decode(chunk, done),
    flush: (done) => decode(undefined, done),
  });
}
