import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { gzipSync } from 'node:zlib';

import { describe, expect, it } from 'vitest';

import { buildCalibrationBlocks, loadTokenizer, InvalidArgumentError, IoError, BadCheckpointError } from '../dist/index.js';
import { calibPath, hasShared, modelDir, sharedSkipReason } from './helpers/shared.js';
import { scratchDir } from './helpers/scratch.js';

// 50 JSONL rows {"text":"sample i"} compressed by `zstd -19` (a zstd fixture that needs no zstd here).
const ZSTD_ROWS =
  'KLUv/WQPAxUDAILEDRGg7eA6jqb/4jXtSxny/Z6CAVOg3d3d3V1VVVVV1f///9+2bdtGxxSyeoMpRljMNfVEEjAuKGQxqBHg738GoKPSARH8IwQxP1VVUTUqU0kRFZSnOGmKiSEQChMUDvhVEhJCjA==';

// Node 22.15+ decompresses zstd itself (its messages differ from fzstd's).
const nodeZstd = typeof (zlib as Record<string, unknown>).createZstdDecompress === 'function';

// A tokenizer stand-in: one token per character (enough to test the selection rule exactly).
const charTokenizer = { encode: (t: string) => Array.from(t, (c) => c.charCodeAt(0)), vocabSize: 65536 };

describe('calibration blocks (REFERENCE.md section 2)', () => {
  it('strips, skips empty and too-long samples, stops after nSamples, cuts whole blocks', async () => {
    const texts = ['  abcd  ', '', '   ', 'x'.repeat(9), 'efgh', 'ijklmn', 'never-reached'];
    const b = await buildCalibrationBlocks({ kind: 'texts', texts }, charTokenizer, { nSamples: 3, seqlen: 6 });
    // accepted: abcd, efgh, ijklmn (14 tokens) -> 2 blocks of 6, 2 dropped
    expect(b.acceptedSamples).toBe(3);
    expect(b.skippedEmpty).toBe(2);
    expect(b.skippedTooLong).toBe(1);
    expect(b.blocks).toBe(2);
    expect(b.droppedTokens).toBe(2);
    expect(String.fromCharCode(...b.tokens)).toBe('abcdefghijkl');
  });

  it('reads JSONL with a chosen text column and plain text by paragraph', async () => {
    const dir = scratchDir('awq-calib-');
    writeFileSync(join(dir, 'c.jsonl'), '{"body":"abcd"}\n\n{"body":"efgh"}\n');
    const b = await buildCalibrationBlocks({ kind: 'jsonl', path: join(dir, 'c.jsonl'), textColumn: 'body' }, charTokenizer, { seqlen: 4 });
    expect(b.blocks).toBe(2);
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: join(dir, 'c.jsonl') }, charTokenizer, { seqlen: 4 })).rejects.toThrow(/"text"/);
    writeFileSync(join(dir, 'c.txt'), 'abcd\n\nefgh\n\n\nij');
    const p = await buildCalibrationBlocks({ kind: 'text', path: join(dir, 'c.txt') }, charTokenizer, { seqlen: 5 });
    expect(p.acceptedSamples).toBe(3);
    expect(p.blocks).toBe(2);
  });

  it('JSONL is read only as far as the selection needs; .gz decompresses on the way; damaged files are IoErrors', async () => {
    const dir = scratchDir('awq-calib-');
    const rows = Array.from({ length: 50 }, (_, i) => JSON.stringify({ text: `sample ${i}` })).join('\n');
    // 3 MB of lines that are not JSON after the first 50: never parsed when 20 samples suffice
    const big = join(dir, 'big.jsonl');
    writeFileSync(big, `${rows}\n${'not json\n'.repeat(350_000)}`);
    const want = await buildCalibrationBlocks({ kind: 'texts', texts: Array.from({ length: 20 }, (_, i) => `sample ${i}`) }, charTokenizer, { nSamples: 20, seqlen: 16 });
    const got = await buildCalibrationBlocks({ kind: 'jsonl', path: big }, charTokenizer, { nSamples: 20, seqlen: 16 });
    expect(got).toEqual(want);
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: big }, charTokenizer, { nSamples: 60, seqlen: 16 })).rejects.toThrow(/big\.jsonl:51: not a JSON object/);

    const gz = join(dir, 'c.jsonl.gz');
    writeFileSync(gz, gzipSync(`${rows}\r\n`));
    expect(await buildCalibrationBlocks({ kind: 'jsonl', path: gz }, charTokenizer, { nSamples: 20, seqlen: 16 })).toEqual(want);
    writeFileSync(join(dir, 'p.txt.gz'), gzipSync('abcd\n\nefgh\n\n\nij'));
    expect((await buildCalibrationBlocks({ kind: 'text', path: join(dir, 'p.txt.gz') }, charTokenizer, { seqlen: 5 })).acceptedSamples).toBe(3);
    const cut = join(dir, 'cut.jsonl.gz');
    writeFileSync(cut, gzipSync(rows).subarray(0, 40));
    const err = await buildCalibrationBlocks({ kind: 'jsonl', path: cut }, charTokenizer, { seqlen: 8 }).catch((e) => e);
    expect(err).toBeInstanceOf(IoError);
    expect(err.message).toMatch(/cannot read calibration file .*cut\.jsonl\.gz: unexpected end of file/);

    // zstd (AutoAWQ's Pile validation set is val.jsonl.zst): Node's own on 22.15+, fzstd before;
    // the same 50 rows compressed by the zstd CLI (zstd -19)
    const zst = join(dir, 'c.jsonl.zst');
    writeFileSync(zst, Buffer.from(ZSTD_ROWS, 'base64'));
    expect(await buildCalibrationBlocks({ kind: 'jsonl', path: zst }, charTokenizer, { nSamples: 20, seqlen: 16 })).toEqual(want);
    writeFileSync(zst, Buffer.from(ZSTD_ROWS, 'base64').subarray(0, 60));
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: zst }, charTokenizer, { nSamples: 20, seqlen: 16 })).rejects.toThrow(IoError);
    // not zstd at all: the decompressor's message (fzstd's error has code 0; the message was "0")
    writeFileSync(zst, 'not zstd');
    const notZstd = await buildCalibrationBlocks({ kind: 'jsonl', path: zst }, charTokenizer, { nSamples: 20, seqlen: 16 }).catch((e) => e);
    expect(notZstd).toBeInstanceOf(IoError);
    expect(notZstd.message).toMatch(nodeZstd ? /c\.jsonl\.zst: [A-Za-z]/ : /^cannot read calibration file .*c\.jsonl\.zst: invalid zstd data$/);
    // a file much larger than one read (64 KiB): decompressed as a stream across chunks
    const cliZstd = spawnSync('zstd', ['--version']);
    if (cliZstd.status === 0) {
      const plain = join(dir, 'big2.jsonl');
      writeFileSync(plain, `${rows}\n${Array.from({ length: 40_000 }, (_, i) => JSON.stringify({ text: `more ${i} ${'x'.repeat(i % 50)}` })).join('\n')}\n`);
      expect(spawnSync('zstd', ['-q', '-f', plain, '-o', `${plain}.zst`]).status).toBe(0);
      const many = { nSamples: 30_000, seqlen: 64 };
      const fromZst = await buildCalibrationBlocks({ kind: 'jsonl', path: `${plain}.zst` }, charTokenizer, many);
      expect(fromZst).toEqual(await buildCalibrationBlocks({ kind: 'jsonl', path: plain }, charTokenizer, many));
      expect(fromZst.acceptedSamples).toBe(30_000);
    }
  });

  it('Parquet: a string column read in row order over row groups (snappy, gzip, uncompressed), with clear errors', async () => {
    const { parquetWriteFile } = await import('hyparquet-writer');
    const dir = scratchDir('awq-calib-pq-');
    const texts = Array.from({ length: 2500 }, (_, i) => `sample ${i}`);
    const want = await buildCalibrationBlocks({ kind: 'texts', texts }, charTokenizer, { nSamples: 2200, seqlen: 64 });
    for (const codec of ['SNAPPY', 'GZIP', 'UNCOMPRESSED'] as const) {
      const path = join(dir, `c-${codec}.parquet`);
      await parquetWriteFile({
        filename: path,
        columnData: [
          { name: 'id', data: texts.map((_, i) => i), type: 'INT32' },
          { name: 'content', data: texts, type: 'STRING' },
        ],
        codec,
        compressors: { GZIP: (b: Uint8Array) => new Uint8Array(gzipSync(b)) },
        rowGroupSize: 700, // four row groups: the selection crosses three of them
      });
      const got = await buildCalibrationBlocks({ kind: 'parquet', path, textColumn: 'content' }, charTokenizer, { nSamples: 2200, seqlen: 64 });
      expect(got, codec).toEqual(want);
    }
    const path = join(dir, 'c-SNAPPY.parquet');
    await expect(buildCalibrationBlocks({ kind: 'parquet', path }, charTokenizer)).rejects.toThrow(/no column "text" \(it has "id", "content"\); choose it with --text-column/);
    await expect(buildCalibrationBlocks({ kind: 'parquet', path, textColumn: 'id' }, charTokenizer)).rejects.toThrow(/row 1: expected a string in column "id", got number/);
    writeFileSync(join(dir, 'not.parquet'), 'PAR1 this is not parquet');
    await expect(buildCalibrationBlocks({ kind: 'parquet', path: join(dir, 'not.parquet') }, charTokenizer)).rejects.toThrow(/not a Parquet file/);
    await expect(buildCalibrationBlocks({ kind: 'parquet', path: join(dir, 'absent.parquet') }, charTokenizer)).rejects.toThrow(IoError);
  });

  it('pre-tokenized samples need no tokenizer', async () => {
    const b = await buildCalibrationBlocks({ kind: 'tokens', samples: [[1, 2, 3], [4, 5, 6, 7, 8]] }, undefined, { seqlen: 5 });
    expect(Array.from(b.tokens)).toEqual([1, 2, 3, 4, 5]);
  });

  it('pre-tokenized samples must be integer ids; an unknown source kind is named', async () => {
    await expect(buildCalibrationBlocks({ kind: 'tokens', samples: [[1, 2], [1.5, 2]] }, undefined, { seqlen: 2 })).rejects.toThrow(
      /calib\.samples\[1\]: expected an array of token ids/,
    );
    await expect(buildCalibrationBlocks({ kind: 'csv', path: 'x.csv' } as never, charTokenizer)).rejects.toThrow(/calib\.kind: expected .*got "csv"/);
  });

  it('too little data is a typed error naming the source and the counts', async () => {
    const err = await buildCalibrationBlocks({ kind: 'texts', texts: ['ab', ''] }, charTokenizer, { seqlen: 4 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toMatch(/^2 texts: calibration data too short.*fewer than one block of 4/);
    const file = join(scratchDir('awq-calib-'), 'short.jsonl');
    writeFileSync(file, '{"text": "ab"}\n');
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: file }, charTokenizer, { seqlen: 4 })).rejects.toThrow(`${file}: calibration data too short`);
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: '/nonexistent/x.jsonl' }, charTokenizer)).rejects.toThrow(/cannot read/);
  });

  it('a missing tokenizer is a typed error', async () => {
    const dir = scratchDir('awq-notok-');
    await expect(loadTokenizer(dir)).rejects.toBeInstanceOf(BadCheckpointError);
  });

  it.skipIf(!hasShared)('the shared calibration set gives 128 samples and 90 blocks of 512 (REFERENCE.md section 8)', async () => {
    const tok = await loadTokenizer(modelDir);
    const b = await buildCalibrationBlocks({ kind: 'jsonl', path: calibPath }, tok);
    expect(b.acceptedSamples).toBe(128);
    expect(b.blocks).toBe(90);
  });

  it.skipIf(!hasShared)('the default calibration set shipped with the package is usable', async () => {
    const tok = await loadTokenizer(modelDir);
    const b = await buildCalibrationBlocks({ kind: 'default' }, tok);
    expect(b.acceptedSamples).toBe(128);
    expect(b.blocks).toBeGreaterThanOrEqual(64);
  });
});
if (!hasShared) console.warn(`calibration tests on the real model skipped: ${sharedSkipReason}`);
