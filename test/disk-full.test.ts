/**
 * A disk that fills during the write (issue 4, bad input). Without root no small file system can be
 * mounted, so the CLI runs in a child process under a file-size limit (`ulimit -f`): writes past it
 * fail with EFBIG (SIGXFSZ is ignored in the child, so write() returns the error instead of
 * killing the process), which is what a full disk looks like to the writer. The run must end with
 * a typed I/O error naming the file and saying the disk is full, and leave neither the output
 * folder nor its temporary folder behind.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, openSync, readdirSync, readFileSync, readSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { IoError } from '../dist/index.js';
import { ioError } from '../dist/errors.js'; // internal: how I/O failures are worded
import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const cli = resolve('dist/cli/main.js');

/** Runs `node args...` under `ulimit -f kib` (1 KiB blocks) with SIGXFSZ ignored. */
function runLimited(kib: number | null, args: string[]) {
  const limit = kib === null ? '' : `ulimit -f ${kib} || exit 97; `;
  return spawnSync('bash', ['-c', `trap "" XFSZ; ${limit}exec "$@"`, 'bash', process.execPath, ...args], {
    encoding: 'utf8',
  });
}

/** Why the limit cannot be used here (null: it works): a 64 KiB file must fail with EFBIG. */
function ulimitUnavailable(): string | null {
  const probe = join(scratchDir('awq-ulimit-'), 'probe');
  const r = runLimited(16, ['-e', `try { require('fs').writeFileSync(${JSON.stringify(probe)}, Buffer.alloc(65536)); console.log('wrote'); } catch (e) { console.log(e.code); }`]);
  if (r.error) return `bash is not available (${r.error.message})`;
  if (r.status === 97) return `ulimit -f is refused here: ${r.stderr.trim()}`;
  if (r.stdout.trim() !== 'EFBIG') return `a file-size limit does not make writes fail with EFBIG here (got ${JSON.stringify(r.stdout.trim() || r.stderr.trim())}, status ${r.status}, signal ${r.signal})`;
  return null;
}

const skipReason = ulimitUnavailable();

/** Entries of out's parent folder that belong to `out` (the folder itself or its temporary twin). */
function leftovers(out: string): string[] {
  return readdirSync(dirname(out)).filter((e) => e === basename(out) || e.startsWith(`${basename(out)}.`));
}

describe('typed errors for a full disk', () => {
  it('names the file and says the disk or quota is full for ENOSPC, EDQUOT and EFBIG', () => {
    const sys = (code: string) => Object.assign(new Error(`${code}: raw message, write`), { code });
    for (const [code, text] of [['ENOSPC', /the disk is full/], ['EDQUOT', /the quota is full/], ['EFBIG', /the disk is full for this file/]] as const) {
      const e = ioError('writing /x/y.safetensors', sys(code));
      expect(e).toBeInstanceOf(IoError);
      expect(e.code).toBe('ERR_AWQ_IO');
      expect(e.message).toMatch(/^writing \/x\/y\.safetensors: /);
      expect(e.message).toMatch(text);
      expect(e.message).toContain(code);
    }
    expect(ioError('reading /a', sys('EACCES')).message).toBe('reading /a: EACCES: raw message, write');
  });
});

describe.skipIf(skipReason !== null)(`quantize onto a disk that fills up${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  it('fails with ERR_AWQ_IO naming the file and leaves no output folder, wherever the write stops', async () => {
    // A small vocabulary so the layers, not the embedding table, are most of the bytes; no tokenizer
    // (RTN needs none), so nothing but the weights is large.
    const model = await writeTinyModel({ vocab: 256, layers: 4 });
    rmSync(join(model, 'tokenizer.json'), { force: true });
    const parent = scratchDir('awq-diskfull-');
    const args = (out: string) => [cli, 'quantize', model, '--out', out, '--method', 'rtn', '--quiet'];

    // Unlimited: the sizes that the limits below are placed against.
    const full = join(parent, 'full');
    const ok = runLimited(null, args(full));
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    const shard = join(full, 'model.safetensors');
    const fileBytes = statSync(shard).size;
    const head = Buffer.alloc(8);
    const fd = openSync(shard, 'r');
    readSync(fd, head, 0, 8, 0);
    closeSync(fd);
    const dataBytes = fileBytes - 8 - Number(head.readBigUInt64LE(0));
    const embedBytes = 256 * 128 * 2;

    const cases = [
      // in the middle of the layers' tensors (streamed into the shard's data file)
      { name: 'mid-layers', kib: Math.floor((embedBytes + (dataBytes - embedBytes) / 2) / 1024), file: /writing tensor 'model\.layers\.\d+\.[\w.]+' to \S+\.shard-00001\.data\.partial/ },
      // all tensors fit, but the shard file (header + data) does not: fails in finish()
      { name: 'finish', kib: Math.ceil(dataBytes / 1024), file: /writing \S+\.shard-00001\.safetensors\.partial/ },
    ];
    expect(cases[0].kib * 1024).toBeGreaterThan(embedBytes);
    expect(cases[1].kib * 1024).toBeLessThan(fileBytes); // the header pushes the shard past the limit
    for (const c of cases) {
      const out = join(parent, c.name);
      const r = runLimited(c.kib, args(out));
      expect(r.signal, c.name).toBeNull();
      expect(r.status, `${c.name}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(c.file);
      expect(r.stderr).toContain(out); // the file named lies in <out>'s temporary twin
      expect(r.stderr).toMatch(/file too large.*the disk is full for this file.*\(ERR_AWQ_IO\)/);
      expect(leftovers(out), c.name).toEqual([]);
    }
    // the unlimited run's folder is the only thing written
    expect(readdirSync(parent).sort()).toEqual(['full']);
    expect(existsSync(join(full, 'config.json'))).toBe(true);

    // --resume: the layers finished before the disk filled are kept, and once there is room the
    // same command continues after them and writes the same checkpoint
    const out = join(parent, 'resumed');
    const r = runLimited(cases[0].kib, [...args(out), '--resume']);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/the disk is full for this file.*\(ERR_AWQ_IO\)/);
    expect(existsSync(out)).toBe(false);
    const kept = JSON.parse(readFileSync(join(`${out}.resume`, 'state.json'), 'utf8')).layersDone;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(4);
    const again = runLimited(null, [...args(out), '--resume', '--json']);
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).resumedLayers).toBe(kept);
    expect(readFileSync(join(out, 'model.safetensors')).equals(readFileSync(shard))).toBe(true);
    expect(existsSync(`${out}.resume`)).toBe(false);
  });

  it('--resume: a kept layer that does not fit fails the run with its file named, though it is written while the next layer computes', async () => {
    // Calibration hidden states (16 blocks x 256 tokens x 128 x 4 bytes = 2 MiB per kept layer)
    // far larger than the checkpoint (< 1 MiB): the limit fails the first layer's hidden-state
    // file only, whose write overlaps the second layer's search.
    const model = await writeTinyModel({ vocab: 256, layers: 3 });
    const parent = scratchDir('awq-diskfull-resume-');
    const ids = join(parent, 'ids.json');
    writeFileSync(ids, JSON.stringify(Array.from({ length: 16 }, (_, b) => Array.from({ length: 256 }, (_, t) => (b * 31 + t * 7) % 256))));
    const out = join(parent, 'out');
    const r = runLimited(1024, [cli, 'quantize', model, '--out', out, '--calib-tokens', ids, '--seqlen', '256', '--threads', '1', '--resume', '--quiet']);
    expect(r.signal).toBeNull();
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/writing \S+out\.resume\/hidden-after-layer-00000\S*: .*the disk is full for this file.*\(ERR_AWQ_IO\)/);
    // nothing was kept (the folder goes), no output folder
    expect(readdirSync(parent).sort()).toEqual(['ids.json']);
  });
});
