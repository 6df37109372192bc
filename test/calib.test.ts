import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { buildCalibrationBlocks, loadTokenizer, InvalidArgumentError, BadCheckpointError } from '../dist/index.js';
import { calibPath, hasShared, modelDir, sharedSkipReason } from './helpers/shared.js';
import { scratchDir } from './helpers/scratch.js';

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

  it('pre-tokenized samples need no tokenizer', async () => {
    const b = await buildCalibrationBlocks({ kind: 'tokens', samples: [[1, 2, 3], [4, 5, 6, 7, 8]] }, undefined, { seqlen: 5 });
    expect(Array.from(b.tokens)).toEqual([1, 2, 3, 4, 5]);
  });

  it('too little data is a typed error naming the counts', async () => {
    const err = await buildCalibrationBlocks({ kind: 'texts', texts: ['ab', ''] }, charTokenizer, { seqlen: 4 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toMatch(/fewer than one block of 4/);
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
