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

  it('an empty text is tokenized as AutoAWQ does: [BOS] from a tokenizer that adds one is a sample; strip() is Python\'s', async () => {
    const bosTokenizer = { encode: (t: string) => [1, ...Array.from(t, (c) => c.charCodeAt(0))], vocabSize: 65536 };
    const b = await buildCalibrationBlocks({ kind: 'texts', texts: ['', '   ', 'a', 'never-reached'] }, bosTokenizer, { nSamples: 3, seqlen: 2 });
    // [1], [1], [1, a]: 4 tokens, 2 blocks (these were dropped as empty before tokenizing)
    expect([b.acceptedSamples, b.skippedEmpty, b.blocks]).toEqual([3, 0, 2]);
    expect([...b.tokens]).toEqual([1, 1, 1, 97]);
    // Python's whitespace: U+001C..U+001F and U+0085 are stripped, a byte-order mark is kept
    const strip = await buildCalibrationBlocks({ kind: 'texts', texts: ['\x1c\x85ab\x1f', '\ufeffc'] }, charTokenizer, { nSamples: 2, seqlen: 3 });
    expect([...strip.tokens]).toEqual([97, 98, 0xfeff]);
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
    // a .json holding one array (json.dump of a list), or lines that are JSON but not objects
    const array = join(dir, 'array.json');
    writeFileSync(array, JSON.stringify([{ text: 'a' }, { text: 'b' }]));
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: array }, charTokenizer)).rejects.toThrow(
      /array\.json:1: a JSON array, where JSON lines hold one object per line \(an array of objects converts with jq -c '\.\[\]'\)$/,
    );
    writeFileSync(array, JSON.stringify([{ text: 'a' }, { text: 'b' }], null, 2)); // json.dump(..., indent=2)
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: array }, charTokenizer)).rejects.toThrow(/array\.json:1: a JSON array, where JSON lines/);
    const strings = join(dir, 'strings.jsonl');
    writeFileSync(strings, '"one"\n"two"\n');
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: strings }, charTokenizer)).rejects.toThrow(/strings\.jsonl:1: a JSON string, where JSON lines hold one object per line$/);

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

    // strings that are not UTF-8 (hyparquet would make them U+FFFD) are refused naming the row,
    // when the selection reaches them
    const latin1 = join(dir, 'latin1.parquet');
    const bytes = texts.slice(0, 10).map((t) => new TextEncoder().encode(t));
    bytes[6] = new Uint8Array(Buffer.from('caf\xe9', 'latin1'));
    await parquetWriteFile({ filename: latin1, columnData: [{ name: 'text', data: bytes, type: 'STRING' }], rowGroupSize: 4 });
    expect((await buildCalibrationBlocks({ kind: 'parquet', path: latin1 }, charTokenizer, { nSamples: 6, seqlen: 8 })).acceptedSamples).toBe(6);
    const err = await buildCalibrationBlocks({ kind: 'parquet', path: latin1 }, charTokenizer, { nSamples: 8, seqlen: 8 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe(`${latin1}: row 7: not UTF-8 text (convert it first, e.g. with iconv)`);
  });

  it('pre-tokenized samples need no tokenizer', async () => {
    const b = await buildCalibrationBlocks({ kind: 'tokens', samples: [[1, 2, 3], [4, 5, 6, 7, 8]] }, undefined, { seqlen: 5 });
    expect(Array.from(b.tokens)).toEqual([1, 2, 3, 4, 5]);
  });

  it('pre-tokenized samples must be integer ids; an unknown source kind is named', async () => {
    await expect(buildCalibrationBlocks({ kind: 'tokens', samples: [[1, 2], [1.5, 2]] }, undefined, { seqlen: 2 })).rejects.toThrow(
      /^calib\.samples: sample 1, position 0: expected an integer token id, got 1\.5$/,
    );
    await expect(buildCalibrationBlocks({ kind: 'tokens', samples: [[1, 2], 3] } as never, undefined, { seqlen: 2 })).rejects.toThrow(
      /^calib\.samples: sample 1: expected an array of token ids, got 3$/,
    );
    // a hole would have become token 0
    await expect(buildCalibrationBlocks({ kind: 'tokens', samples: [[1, , 2]] } as never, undefined, { seqlen: 2 })).rejects.toThrow(
      /^calib\.samples: sample 0, position 1: expected an integer token id, got undefined$/,
    );
    await expect(buildCalibrationBlocks({ kind: 'csv', path: 'x.csv' } as never, charTokenizer)).rejects.toThrow(/calib\.kind: expected .*got "csv"/);
  });

  it('pre-tokenized ids of 2^31 and above are refused before they wrap in 32 bits, naming the id, sample, position and vocabulary', async () => {
    const samples = (id: number) => [[1, 2, 3, 4], [5, 6, id, 7]];
    // 2^40 used to become token 0, 2^31..2^32-1 negative ids; 2^53 + 2 is past the safe integers
    for (const id of [2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 53 + 2, -1]) {
      const err = await buildCalibrationBlocks({ kind: 'tokens', samples: samples(id) }, undefined, { seqlen: 4 }).catch((e) => e);
      expect(err, String(id)).toBeInstanceOf(InvalidArgumentError);
      expect(err.message).toBe(`calib.samples: sample 1, position 2: token id ${id} is outside the range of token ids [0, 2^31)`);
    }
    // with the model's vocabulary (the pipeline passes vocab_size), and the file they came from
    const file = { kind: 'tokens', samples: samples(8192), path: 'ids.json' } as const;
    await expect(buildCalibrationBlocks(file, undefined, { seqlen: 4, vocabSize: 8192 })).rejects.toThrow(
      /^ids\.json: sample 1, position 2: token id 8192 is outside the model's vocabulary \(vocab_size 8192\)$/,
    );
    expect(Array.from((await buildCalibrationBlocks(file, undefined, { seqlen: 4, vocabSize: 8193 })).tokens)).toEqual([1, 2, 3, 4, 5, 6, 8192, 7]);
    // every sample is checked, also those after the ones the selection takes
    await expect(buildCalibrationBlocks(file, undefined, { seqlen: 4, nSamples: 1, vocabSize: 8192 })).rejects.toThrow(/token id 8192/);
    await expect(buildCalibrationBlocks(file, undefined, { seqlen: 4, vocabSize: 0 })).rejects.toThrow(/^vocabSize: expected a positive integer, got 0$/);
  });

  it('calibration text must be UTF-8: Latin-1 JSONL and 0xFF bytes in text are refused naming the file, as awq eval does', async () => {
    const dir = scratchDir('awq-calib-utf8-');
    const notUtf8 = (file: string) => `${file}: not UTF-8 text (convert it first, e.g. with iconv)`;
    const latin1 = join(dir, 'latin1.jsonl');
    writeFileSync(latin1, Buffer.from('{"text": "caf\xe9 au lait"}\n'.repeat(20), 'latin1'));
    const err = await buildCalibrationBlocks({ kind: 'jsonl', path: latin1 }, charTokenizer, { seqlen: 8 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toBe(notUtf8(latin1));
    const ff = join(dir, 'ff.txt');
    writeFileSync(ff, Buffer.concat([Buffer.from('abcd\n\nef'), Buffer.from([0xff, 0xfe]), Buffer.from('gh\n')]));
    await expect(buildCalibrationBlocks({ kind: 'text', path: ff }, charTokenizer, { seqlen: 4 })).rejects.toThrow(notUtf8(ff));
    // compressed: checked after decompression; a character cut off by the end of the file is invalid too
    const gz = join(dir, 'latin1.jsonl.gz');
    writeFileSync(gz, gzipSync(Buffer.from('{"text": "caf\xe9"}\n', 'latin1')));
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: gz }, charTokenizer, { seqlen: 4 })).rejects.toThrow(notUtf8(gz));
    const cut = join(dir, 'cut.txt');
    writeFileSync(cut, Buffer.from('abcd\n\né').subarray(0, -1));
    await expect(buildCalibrationBlocks({ kind: 'text', path: cut }, charTokenizer, { seqlen: 4 })).rejects.toThrow(notUtf8(cut));
    // a UTF-8 byte order mark is dropped (eval drops it too), not parsed as part of the first row
    const bom = join(dir, 'bom.jsonl');
    writeFileSync(bom, `\ufeff${'{"text": "abcd"}\n'.repeat(2)}`);
    expect(Array.from((await buildCalibrationBlocks({ kind: 'jsonl', path: bom }, charTokenizer, { seqlen: 4 })).tokens)).toEqual([97, 98, 99, 100, 97, 98, 99, 100]);
  });

  it('UTF-8 characters split between read chunks decode whole; JSONL is checked only as far as it is read', async () => {
    const dir = scratchDir('awq-calib-utf8-');
    // 2-, 3- and 4-byte characters; the first text is lengthened until the first 64 KiB read ends
    // inside a character (a continuation byte 10xxxxxx at offset 65536)
    const serialized = (texts: string[], format: 'jsonl' | 'text') =>
      Buffer.from(format === 'jsonl' ? texts.map((text) => JSON.stringify({ text })).join('\n') : texts.join('\n\n'));
    const splitAt64K = (format: 'jsonl' | 'text') => {
      for (let pad = '';; pad += 'x') {
        const texts = Array.from({ length: 3000 }, (_, i) => `${i === 0 ? pad : ''}${i} ${'ü€😀'.repeat(8)}`);
        const bytes = serialized(texts, format);
        if ((bytes[65536] & 0xc0) === 0x80) return { texts, bytes };
      }
    };
    const many = { nSamples: 3000, seqlen: 64 };
    const jsonl = splitAt64K('jsonl');
    const want = await buildCalibrationBlocks({ kind: 'texts', texts: jsonl.texts }, charTokenizer, many);
    writeFileSync(join(dir, 'multi.jsonl'), jsonl.bytes);
    writeFileSync(join(dir, 'multi.jsonl.gz'), gzipSync(jsonl.bytes));
    for (const name of ['multi.jsonl', 'multi.jsonl.gz']) {
      expect(await buildCalibrationBlocks({ kind: 'jsonl', path: join(dir, name) }, charTokenizer, many), name).toEqual(want);
    }
    const text = splitAt64K('text');
    writeFileSync(join(dir, 'multi.txt'), text.bytes);
    expect(await buildCalibrationBlocks({ kind: 'text', path: join(dir, 'multi.txt') }, charTokenizer, many)).toEqual(
      await buildCalibrationBlocks({ kind: 'texts', texts: text.texts }, charTokenizer, many),
    );
    // Latin-1 3 MB past the rows a selection of 20 takes: never read, so never refused
    const tail = join(dir, 'tail.jsonl');
    writeFileSync(tail, Buffer.concat([jsonl.bytes, Buffer.from(`\n${'{"text": "caf\xe9"}\n'.repeat(150_000)}`, 'latin1')]));
    const first20 = await buildCalibrationBlocks({ kind: 'texts', texts: jsonl.texts.slice(0, 20) }, charTokenizer, { nSamples: 20, seqlen: 64 });
    expect(await buildCalibrationBlocks({ kind: 'jsonl', path: tail }, charTokenizer, { nSamples: 20, seqlen: 64 })).toEqual(first20);
    await expect(buildCalibrationBlocks({ kind: 'jsonl', path: tail }, charTokenizer, { nSamples: 4000, seqlen: 64 })).rejects.toThrow(
      `${tail}: not UTF-8 text`,
    );
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

  it('special tokens of calibration text as Transformers 4 (AutoAWQ) adds them for Llama-family tokenizers', async () => {
    // LlamaTokenizerFast replaces tokenizer.json's post-processor with BOS (add_bos_token, default
    // true) and EOS (add_eos_token, default false); other classes keep tokenizer.json's.
    const withBos = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } };
    const folder = (postProcessor: object | null, tokenizerConfig?: unknown, modelConfig?: object, specialTokensMap?: object) => {
      const dir = scratchDir('awq-tok-');
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
        version: '1.0', truncation: null, padding: null, normalizer: null, decoder: null,
        added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
        pre_tokenizer: { type: 'Whitespace' }, post_processor: postProcessor,
        model: { type: 'WordLevel', vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, hello: 3, world: 4 }, unk_token: '<unk>' },
      }));
      if (tokenizerConfig !== undefined) writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
      if (modelConfig) writeFileSync(join(dir, 'config.json'), JSON.stringify(modelConfig));
      if (specialTokensMap) writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify(specialTokensMap));
      return dir;
    };
    const ids = async (dir: string, addSpecialTokens?: boolean) => (await loadTokenizer(dir)).encode('hello world', { addSpecialTokens });
    expect(await ids(folder(withBos))).toEqual([1, 3, 4]); // tokenizer.json alone
    expect(await ids(folder(null))).toEqual([3, 4]);
    expect(await ids(folder(null, undefined, { model_type: 'llama' }))).toEqual([1, 3, 4]); // no class: a llama model's is LlamaTokenizerFast
    expect(await ids(folder(null, { tokenizer_class: null }, { model_type: 'mistral' }))).toEqual([1, 3, 4]);
    expect(await ids(folder(null, undefined, { model_type: 'qwen2' }))).toEqual([3, 4]);
    expect(await ids(folder(null, {}, { model_type: 'qwen2', tokenizer_class: 'LlamaTokenizer' }))).toEqual([1, 3, 4]); // config.json's class next
    expect(await ids(folder(null, {}, { model_type: 'llama', tokenizer_class: 'PreTrainedTokenizerFast' }))).toEqual([3, 4]);
    expect(await ids(folder(null, { tokenizer_class: 'LlamaTokenizer' }))).toEqual([1, 3, 4]);
    expect(await ids(folder(withBos, { tokenizer_class: 'LlamaTokenizer', add_eos_token: true }))).toEqual([1, 3, 4, 2]);
    expect(await ids(folder(withBos, { tokenizer_class: 'CodeLlamaTokenizer', add_bos_token: false }))).toEqual([3, 4]);
    expect(await ids(folder(withBos, { tokenizer_class: 'LlamaTokenizerFast', add_bos_token: null, add_eos_token: 1 }))).toEqual([3, 4, 2]);
    expect(await ids(folder(withBos, { tokenizer_class: 'LlamaTokenizer', bos_token: { content: '</s>' } }))).toEqual([2, 3, 4]);
    expect(await ids(folder(withBos, { tokenizer_class: 'PreTrainedTokenizerFast', add_bos_token: false, add_eos_token: true }))).toEqual([1, 3, 4]);
    expect(await ids(folder(withBos, { tokenizer_class: 'Qwen2Tokenizer', add_eos_token: true }))).toEqual([1, 3, 4]);
    // evaluation text takes no special tokens, whatever the class
    expect(await ids(folder(withBos, { tokenizer_class: 'LlamaTokenizer', add_eos_token: true }), false)).toEqual([3, 4]);
    // a legacy config (no added_tokens_decoder) takes its special tokens from special_tokens_map.json
    expect(await ids(folder(null, { tokenizer_class: 'LlamaTokenizer', bos_token: '<s>' }, undefined, { bos_token: { content: '</s>' } }))).toEqual([2, 3, 4]);
    expect(await ids(folder(null, { tokenizer_class: 'LlamaTokenizer', bos_token: '<s>', added_tokens_decoder: {} }, undefined, { bos_token: '</s>' }))).toEqual([1, 3, 4]);
    // a token the rule needs but the vocabulary lacks fails calibration, not evaluation (which adds none)
    const noBos = await loadTokenizer(folder(withBos, { tokenizer_class: 'LlamaTokenizer', bos_token: '<bos>' }));
    expect(noBos.encode('hello world', { addSpecialTokens: false })).toEqual([3, 4]);
    expect(() => noBos.encode('hello world')).toThrow(/tokenizer_config\.json: add_bos_token needs bos_token, and "<bos>" is not a token of tokenizer\.json/);
    expect(() => noBos.encode('hello world')).toThrow(BadCheckpointError);
    await expect(loadTokenizer(folder(withBos, ['LlamaTokenizer']))).rejects.toThrow(/tokenizer_config\.json: expected a JSON object, got an array/);
  });

  it("a tokenizer's ids outside the model's vocabulary are an InvalidArgumentError naming the source", async () => {
    await expect(buildCalibrationBlocks({ kind: 'texts', texts: ['abcd', 'xyz'] }, charTokenizer, { seqlen: 4, vocabSize: 100 }))
      .rejects.toThrow(/^2 texts: token id 100 is outside the model's vocabulary \(vocab_size 100\)$/);
    expect((await buildCalibrationBlocks({ kind: 'texts', texts: ['abcd'] }, charTokenizer, { seqlen: 4, vocabSize: 101 })).blocks).toBe(1);
  });

  it('a token with no id (not in the vocabulary, no unk_token there) is an error naming it, not id 0', async () => {
    const dir = scratchDir('awq-tok-unk-');
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
      version: '1.0', truncation: null, padding: null, normalizer: null, decoder: null, added_tokens: [], post_processor: null,
      pre_tokenizer: { type: 'Whitespace' },
      model: { type: 'WordLevel', vocab: { hello: 0, world: 1 }, unk_token: '[UNK]' }, // [UNK] is no token of it
    }));
    const tok = await loadTokenizer(dir);
    expect(tok.encode('hello world', { addSpecialTokens: false })).toEqual([0, 1]);
    expect(() => tok.encode('hello there world', { addSpecialTokens: false })).toThrow(BadCheckpointError);
    expect(() => tok.encode('hello there world')).toThrow(
      /tokenizer\.json: token 1 of the text, "there", has no id: it is not in the vocabulary, and the model names no unk_token that is$/,
    );
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
