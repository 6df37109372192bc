import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import {
  BadCheckpointError,
  InvalidArgumentError,
  SafetensorsFile,
  SafetensorsWriter,
  type Dtype,
} from '../dist/index.js';
import { safetensorsBytes, tmpDir } from './helpers/fixtures.js';
import { mulberry32 } from './helpers/random.js';

const tmp = tmpDir('awq-st-');
afterAll(() => tmp.cleanup());
let counter = 0;
function file(bytes: Uint8Array): string {
  const p = join(tmp.dir, `f${counter++}.safetensors`);
  writeFileSync(p, bytes);
  return p;
}

async function openError(bytes: Uint8Array): Promise<BadCheckpointError> {
  const p = file(bytes);
  const err = await SafetensorsFile.open(p).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BadCheckpointError);
  expect((err as Error).message).toContain(p);
  return err as BadCheckpointError;
}

const twoTensors = {
  a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
  b: { dtype: 'I8', shape: [4], data_offsets: [16, 20] },
};

describe('SafetensorsFile: reading', () => {
  it('reads every dtype a hand-built file holds, raw and as fp32', async () => {
    const f32 = new Float32Array([1.5, -2, 3.25, 1e-3]);
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001]); // 1, -2, 65504, 2^-24
    const bf16 = new Uint16Array([0x3f80, 0xc040, 0x0000, 0x7f80]); // 1, -3, 0, inf
    const f64 = new Float64Array([0.5, -7]);
    const i64 = new BigInt64Array([-3n, 1234567n]);
    const i32 = new Int32Array([-5, 7]);
    const i16 = new Int16Array([-300, 300]);
    const i8 = new Int8Array([-128, 127]);
    const u8 = new Uint8Array([0, 255]);
    const bool = new Uint8Array([1, 0]);
    const parts: [string, Dtype, ArrayBufferView, number[]][] = [
      ['f32', 'F32', f32, [2, 2]], ['f16', 'F16', f16, [4]], ['bf16', 'BF16', bf16, [1, 4]], ['f64', 'F64', f64, [2]],
      ['i64', 'I64', i64, [2]], ['i32', 'I32', i32, [2]], ['i16', 'I16', i16, [2]], ['i8', 'I8', i8, [2]],
      ['u8', 'U8', u8, [2]], ['bool', 'BOOL', bool, [2]],
    ];
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    const chunks: Uint8Array[] = [];
    let off = 0;
    for (const [name, dtype, arr, shape] of parts) {
      header[name] = { dtype, shape, data_offsets: [off, off + arr.byteLength] };
      chunks.push(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength));
      off += arr.byteLength;
    }
    const data = new Uint8Array(off);
    let o = 0;
    for (const c of chunks) {
      data.set(c, o);
      o += c.byteLength;
    }
    const f = await SafetensorsFile.open(file(safetensorsBytes(header, data)));
    try {
      expect(f.metadata).toEqual({ format: 'pt' });
      expect([...f.tensors.keys()]).toEqual(parts.map((p) => p[0]));
      expect(f.tensors.get('bf16')!.shape).toEqual([1, 4]);
      expect(Array.from(await f.readF32('f32'))).toEqual(Array.from(f32));
      expect(Array.from(await f.readF32('f16'))).toEqual([1, -2, 65504, 2 ** -24]);
      expect(Array.from(await f.readF32('bf16'))).toEqual([1, -3, 0, Infinity]);
      expect(Array.from(await f.readF32('f64'))).toEqual([0.5, -7]);
      expect(Array.from(await f.readF32('i64'))).toEqual([-3, 1234567]);
      expect(Array.from(await f.readF32('i32'))).toEqual([-5, 7]);
      expect(Array.from(await f.readF32('i16'))).toEqual([-300, 300]);
      expect(Array.from(await f.readF32('i8'))).toEqual([-128, 127]);
      expect(Array.from(await f.readF32('u8'))).toEqual([0, 255]);
      expect(Array.from(await f.readF32('bool'))).toEqual([1, 0]);
      expect(Array.from(await f.readRaw('i16'))).toEqual(Array.from(new Uint8Array(i16.buffer)));
      const t = f.tensors.get('i8')!;
      expect(t.dataOffset).toBe(8 + f.headerLength + (header.i8 as { data_offsets: number[] }).data_offsets[0]);
      await expect(f.readF32('nope')).rejects.toBeInstanceOf(BadCheckpointError);
    } finally {
      await f.close();
    }
  });

  it('converts large bf16 / fp16 tensors in chunks exactly', async () => {
    const n = 40_000_003; // several read chunks, odd length
    const rand = mulberry32(3);
    const bits = new Uint16Array(n);
    for (let i = 0; i < n; i++) bits[i] = (rand() * 65536) & 0x7f7f; // finite values of either format
    const header = {
      b: { dtype: 'BF16', shape: [n], data_offsets: [0, 2 * n] },
      h: { dtype: 'F16', shape: [n], data_offsets: [2 * n, 4 * n] },
    };
    const data = new Uint8Array(4 * n);
    data.set(new Uint8Array(bits.buffer), 0);
    data.set(new Uint8Array(bits.buffer), 2 * n);
    const f = await SafetensorsFile.open(file(safetensorsBytes(header, data)));
    const [b, h] = [await f.readF32('b'), await f.readF32('h')];
    await f.close();
    const u = new Uint32Array(b.buffer);
    let bad = 0;
    for (let i = 0; i < n; i += 1) if (u[i] !== bits[i] << 16) bad++;
    expect(bad).toBe(0);
    const dv = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < n; i += 9973) {
      // fp16 by the formula, for a sample
      const x = bits[i];
      const e = (x >> 10) & 31, m = x & 1023, s = x >> 15 ? -1 : 1;
      const ref = e === 31 ? (m ? NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1024 + m) * 2 ** (e - 25);
      dv.setFloat32(0, ref);
      if (!Object.is(h[i], dv.getFloat32(0))) bad++;
    }
    expect(bad).toBe(0);
  });

  it('reads a tensor beyond 4 GiB of file offset and a tensor over 2 GiB (sparse file)', async () => {
    const big = 2 ** 31 + 24; // bytes of tensor "big" (U8)
    const pad = 2 ** 32 - big + 4096; // pushes "tail" past 4 GiB
    const header = {
      big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
      pad: { dtype: 'U8', shape: [pad], data_offsets: [big, big + pad] },
      tail: { dtype: 'I32', shape: [3], data_offsets: [big + pad, big + pad + 12] },
    };
    const head = safetensorsBytes(header, new Uint8Array(0));
    const p = join(tmp.dir, 'sparse.safetensors');
    const fd = openSync(p, 'w');
    writeSync(fd, head);
    const dataStart = head.byteLength;
    ftruncateSync(fd, dataStart + big + pad + 12);
    writeSync(fd, new Uint8Array([7, 9]), 0, 2, dataStart + big - 2);
    writeSync(fd, new Uint8Array(new Int32Array([11, -12, 13]).buffer), 0, 12, dataStart + big + pad);
    closeSync(fd);
    const f = await SafetensorsFile.open(p);
    try {
      expect(f.tensors.get('tail')!.dataOffset).toBeGreaterThan(2 ** 32);
      expect(Array.from(await f.readF32('tail'))).toEqual([11, -12, 13]);
      const raw = await f.readRaw('big');
      expect(raw.byteLength).toBe(big);
      expect([raw[0], raw[2 ** 31], raw[big - 2], raw[big - 1]]).toEqual([0, 0, 7, 9]);
    } finally {
      await f.close();
    }
  });
});

describe('SafetensorsFile: bad input (typed error naming file and tensor)', () => {
  const good = safetensorsBytes(twoTensors, new Uint8Array(20));

  it('accepts the valid base case', async () => {
    const f = await SafetensorsFile.open(file(good));
    await f.close();
  });
  it('truncated file', async () => {
    const err = await openError(good.subarray(0, good.byteLength - 3));
    expect(err.message).toMatch(/truncated/);
    expect(err.message).toContain("'b'");
    await openError(good.subarray(0, 5));
  });
  it('trailing bytes after the data', async () => {
    const err = await openError(safetensorsBytes(twoTensors, new Uint8Array(21)));
    expect(err.message).toMatch(/bytes \[20, 21\) .*trailing bytes after tensor 'b' \(data_offsets \[16, 20\]\), the last/);
  });
  it('header length beyond the file', async () => {
    const err = await openError(safetensorsBytes(twoTensors, new Uint8Array(20), { headerLength: 100_000n }));
    expect(err.message).toMatch(/beyond the end of the file/);
  });
  it('header length over 100 MB', async () => {
    const err = await openError(safetensorsBytes(twoTensors, new Uint8Array(20), { headerLength: 2n ** 62n }));
    expect(err.message).toMatch(/limit/);
  });
  it('header that is not JSON, or not an object', async () => {
    expect((await openError(safetensorsBytes(null, new Uint8Array(0), { rawHeader: '{"a": [1,' }))).message).toMatch(/not valid JSON/);
    expect((await openError(safetensorsBytes([1, 2], new Uint8Array(0)))).message).toMatch(/not a JSON object/);
    const notUtf8 = safetensorsBytes(null, new Uint8Array(0), { rawHeader: '{"x":"ab"}' });
    notUtf8[notUtf8.length - 3] = 0xff;
    expect((await openError(notUtf8)).message).toMatch(/UTF-8/);
  });
  it('overlapping offsets: both tensors of the pair named', async () => {
    const h = { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'I8', shape: [4], data_offsets: [12, 16] } };
    const err = await openError(safetensorsBytes(h, new Uint8Array(16)));
    expect(err.message).toMatch(/tensor 'b' \(data_offsets \[12, 16\]\) overlaps tensor 'a' \(data_offsets \[0, 16\]\): bytes \[12, 16\)/);
  });
  it('overlap at offset 0 (a small tensor moved onto the first one) names both, not a bystander', async () => {
    // QA's m/overlap: one tensor's data_offsets set to [0, its length] collides with the tensor at 0.
    const h = {
      first: { dtype: 'F32', shape: [8], data_offsets: [0, 32] },
      mid: { dtype: 'F32', shape: [2], data_offsets: [32, 40] },
      moved: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      last: { dtype: 'F32', shape: [2], data_offsets: [48, 56] },
    };
    const msg = (await openError(safetensorsBytes(h, new Uint8Array(56)))).message;
    expect(msg).toMatch(/tensor 'first' .*overlaps tensor 'moved' .*bytes \[0, 8\)/);
    expect(msg).not.toMatch(/'mid'|'last'/);
  });
  it('an empty tensor inside another overlaps it', async () => {
    const h = { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, z: { dtype: 'F32', shape: [0], data_offsets: [8, 8] } };
    expect((await openError(safetensorsBytes(h, new Uint8Array(16)))).message).toMatch(/tensor 'z' .*overlaps tensor 'a' .*begins inside/);
    // at a boundary it is fine
    const ok = { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, z: { dtype: 'F32', shape: [0], data_offsets: [16, 16] } };
    await (await SafetensorsFile.open(file(safetensorsBytes(ok, new Uint8Array(16))))).close();
  });
  it('a hole: its byte range and the tensors on each side', async () => {
    const h = { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'I8', shape: [4], data_offsets: [20, 24] } };
    expect((await openError(safetensorsBytes(h, new Uint8Array(24)))).message).toMatch(
      /bytes \[16, 20\) of the data section belong to no tensor: a hole between tensor 'a' \(data_offsets \[0, 16\]\) and tensor 'b' \(data_offsets \[20, 24\]\)/,
    );
    const first = { b: { dtype: 'I8', shape: [4], data_offsets: [4, 8] } };
    expect((await openError(safetensorsBytes(first, new Uint8Array(8)))).message).toMatch(/bytes \[0, 4\) .*a hole before tensor 'b'/);
  });
  it('offsets beyond the end of the file name that tensor, not its neighbour', async () => {
    // QA's m/oob: a middle tensor's data_offsets moved past the end of the data.
    const h = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      moved: { dtype: 'F32', shape: [2], data_offsets: [124, 132] },
      c: { dtype: 'F32', shape: [2], data_offsets: [16, 24] },
    };
    const msg = (await openError(safetensorsBytes(h, new Uint8Array(24)))).message;
    expect(msg).toMatch(/tensor 'moved': data_offsets \[124, 132\] end beyond the data section, which holds 24 bytes/);
    expect(msg).not.toMatch(/'a'|'c'/);
  });
  it('out-of-range offsets', async () => {
    const h = { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'I8', shape: [4], data_offsets: [16, 20] } };
    expect((await openError(safetensorsBytes(h, new Uint8Array(18)))).message).toMatch(/tensor 'b': data_offsets \[16, 20\] end beyond .*truncated/);
    const neg = { a: { dtype: 'I8', shape: [4], data_offsets: [-4, 0] } };
    expect((await openError(safetensorsBytes(neg, new Uint8Array(0)))).message).toMatch(/tensor 'a'.*data_offsets/);
    const backwards = { a: { dtype: 'I8', shape: [4], data_offsets: [4, 0] }, b: { dtype: 'I8', shape: [4], data_offsets: [0, 4] } };
    expect((await openError(safetensorsBytes(backwards, new Uint8Array(4)))).message).toMatch(/tensor 'a': data_offsets \[4, 0\] ends before it begins/);
  });
  it('byte size not matching the shape', async () => {
    const h = { a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 16] } };
    const err = await openError(safetensorsBytes(h, new Uint8Array(16)));
    expect(err.message).toMatch(/tensor 'a': byte length 16 .* = 24/);
  });
  it('unknown dtype, reported by name; malformed entries', async () => {
    const h = { a: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } };
    expect((await openError(safetensorsBytes(h, new Uint8Array(4)))).message).toMatch(/unsupported dtype 'F8_E4M3'/);
    const s = { a: { dtype: 'I8', shape: [2.5], data_offsets: [0, 4] } };
    expect((await openError(safetensorsBytes(s, new Uint8Array(4)))).message).toMatch(/shape/);
    const m = { __metadata__: { format: 3 } };
    expect((await openError(safetensorsBytes(m, new Uint8Array(0)))).message).toMatch(/__metadata__/);
  });
  it('a missing file', async () => {
    await expect(SafetensorsFile.open(join(tmp.dir, 'absent.safetensors'))).rejects.toBeInstanceOf(BadCheckpointError);
  });
});

describe('SafetensorsWriter', () => {
  it('writes one model.safetensors with an aligned, space-padded header and reads it back', async () => {
    const dir = join(tmp.dir, 'single');
    const w = await SafetensorsWriter.create(dir);
    await w.add('x', 'F32', [3], new Float32Array([1, 2, 3]));
    await w.add('y.bias', 'F16', [1], new Uint16Array([0x3c00]));
    await w.add('z', 'I64', [1], new BigInt64Array([5n]));
    const res = await w.finish();
    expect(res).toEqual({ shards: ['model.safetensors'], totalSize: 12 + 2 + 8 });
    expect(readdirSync(dir).sort()).toEqual(['model.safetensors']);
    const bytes = readFileSync(join(dir, 'model.safetensors'));
    const n = Number(bytes.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    expect(text).toMatch(/^\{"__metadata__":\{"format":"pt"\}/);
    expect(text.trimEnd().length).toBeLessThan(n + 1);
    expect(/^ *$/.test(text.slice(text.lastIndexOf('}') + 1))).toBe(true);
    const f = await SafetensorsFile.open(join(dir, 'model.safetensors'));
    expect(Array.from(await f.readF32('x'))).toEqual([1, 2, 3]);
    expect(Array.from(await f.readF32('y.bias'))).toEqual([1]);
    expect(Array.from(await f.readF32('z'))).toEqual([5]);
    await f.close();
  });

  it('shards by maxShardBytes with an index (total_size = tensor bytes), in order', async () => {
    const dir = join(tmp.dir, 'sharded');
    const w = await SafetensorsWriter.create(dir, { maxShardBytes: 100 });
    const sizes = [40, 40, 40, 150, 8, 92, 1];
    for (const [i, s] of sizes.entries()) await w.add(`t${i}`, 'U8', [s], new Uint8Array(s).fill(i));
    const res = await w.finish();
    // [40,40] | [40] | [150] alone (bigger than a shard) | [8, 92] | [1]
    expect(res.shards).toEqual([1, 2, 3, 4, 5].map((i) => `model-0000${i}-of-00005.safetensors`));
    expect(res.totalSize).toBe(sizes.reduce((a, b) => a + b));
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(res.totalSize);
    expect(index.weight_map).toEqual({
      t0: res.shards[0], t1: res.shards[0], t2: res.shards[1], t3: res.shards[2], t4: res.shards[3], t5: res.shards[3], t6: res.shards[4],
    });
    expect(readdirSync(dir).filter((n) => n.includes('partial'))).toEqual([]);
    for (const [i, s] of sizes.entries()) {
      const f = await SafetensorsFile.open(join(dir, index.weight_map[`t${i}`]));
      const raw = await f.readRaw(`t${i}`);
      expect(raw.byteLength).toBe(s);
      expect(raw.every((v) => v === i)).toBe(true);
      await f.close();
    }
  });

  it('rejects bad tensors with InvalidArgumentError and writes nothing for them', async () => {
    const dir = join(tmp.dir, 'bad');
    const w = await SafetensorsWriter.create(dir);
    await expect(w.add('a', 'F32', [2], new Float32Array(3))).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(w.add('a', 'Q4' as Dtype, [2], new Float32Array(2))).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(w.add('a', 'F32', [-2], new Float32Array(2))).rejects.toBeInstanceOf(InvalidArgumentError);
    await w.add('a', 'F32', [2], new Float32Array(2));
    await expect(w.add('a', 'F32', [2], new Float32Array(2))).rejects.toThrow(/already added/);
    await w.abort();
    expect(readdirSync(dir)).toEqual([]);
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(false);
  });
});
