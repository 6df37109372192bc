/**
 * What `quantize({ resume: true })` keeps between runs, in `<out>.resume/` beside the output: every
 * finished decoder layer as it goes into the checkpoint (packed, one safetensors file per layer),
 * the calibration hidden states after the last finished layer (the next layer's input), and
 * `state.json` with the run's fingerprint and the finished layers' reports. A run that stops
 * (Ctrl-C, a crash, a full disk, a killed machine) loses at most the layer it was in; the next
 * run with the same model, settings and calibration continues after the last finished layer and
 * writes the checkpoint the uninterrupted run writes.
 *
 * Every file is written under a temporary name, flushed to disk and renamed, and state.json is
 * renamed last, so the folder always describes finished layers only. A lock file keeps two runs
 * from sharing the folder. The folder is removed once the checkpoint is in place.
 *
 * The fingerprint holds what defines the result (model, settings, precision, calibration, awq
 * version); where the arithmetic ran (instruction set, GPU) is recorded per layer but may change
 * between runs: a run continued on another machine is still that run, with the kept layers
 * rounded as they were there.
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import { AwqError, BadCheckpointError, InvalidArgumentError, ioError } from '../errors.js';
import { addAwqLinearTensors, type AwqLinearTensors } from '../checkpoint/awq-format.js';
import { SafetensorsFile, SafetensorsWriter } from '../checkpoint/safetensors.js';
import type { PackedLayer } from './packed-layer.js';

/** What must be equal for a kept layer to be the layer this run would compute (flat values). */
export type RunFingerprint = Record<string, string | number | boolean | null>;

interface StateFile<Report> {
  format: 'awq-resume';
  version: 1;
  run: RunFingerprint;
  /** Layers 0..layersDone-1 are finished. */
  layersDone: number;
  /** The hidden states after layer layersDone-1 (null before any layer, and for RTN). */
  hidden: { file: string; rows: number; cols: number } | null;
  reports: Report[];
  /** Where each finished layer's arithmetic ran (e.g. `cpu: avx512`), in layer order. */
  machines: string[];
}

const STATE = 'state.json';
const LOCK = 'lock';
const CHUNK = 64 << 20;
const pad5 = (i: number) => String(i).padStart(5, '0');
const layerFile = (i: number) => `layer-${pad5(i)}.safetensors`;
const hiddenFile = (i: number) => `hidden-after-layer-${pad5(i)}.f32`;
/** Names this module writes (final or temporary): the only ones it ever deletes. */
const OURS = /^(layer-\d{5}\.safetensors|hidden-after-layer-\d{5}\.f32|state\.json|lock)(\.(tmp|stale)-[0-9a-f]+)?$/;

/** The folder a resumable run of `out` keeps its progress in. */
export function resumeDirFor(out: string): string {
  return `${resolve(out)}.resume`;
}

/** Finished layers kept for `out` by an earlier resumable run, or null when there are none. */
export async function keptProgress(out: string): Promise<{ dir: string; layersDone: number } | null> {
  const dir = resumeDirFor(out);
  try {
    const s = JSON.parse(await readFile(join(dir, STATE), 'utf8')) as StateFile<unknown>;
    return Number.isInteger(s.layersDone) && s.layersDone > 0 ? { dir, layersDone: s.layersDone } : null;
  } catch {
    return null;
  }
}

/** sha256 (hex) of some bytes: calibration token ids, config.json text. */
export function digest(data: ArrayBufferView | string): string {
  const h = createHash('sha256');
  h.update(typeof data === 'string' ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return h.digest('hex');
}

/**
 * Identity of a model folder for resuming: config.json's digest, and per weight file its size and
 * a digest of its first 1 MiB (the safetensors header) and of 64 slices of 16 KiB spread over it.
 * Hashing gigabytes would take minutes; modification times change with every copy or download
 * of the same files; the sampled bytes tell two fine-tunes of one base model apart (their headers
 * and sizes are equal, their weights differ everywhere).
 */
export async function modelFingerprint(dir: string): Promise<RunFingerprint> {
  try {
    const fp: RunFingerprint = { 'model.config': digest(await readFile(join(dir, 'config.json'), 'utf8')) };
    for (const name of (await readdir(dir)).sort()) {
      if (/\.safetensors(\.index\.json)?$/.test(name)) fp[`model.${name}`] = await sampledDigest(join(dir, name));
    }
    return fp;
  } catch (err) {
    throw ioError(`reading ${dir}`, err);
  }
}

async function sampledDigest(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const h = createHash('sha256');
    const buf = Buffer.alloc(1 << 20);
    const take = async (pos: number, len: number) => {
      const { bytesRead } = await fh.read(buf, 0, Math.min(len, buf.length), pos);
      h.update(buf.subarray(0, bytesRead));
    };
    await take(0, buf.length);
    const SLICES = 64;
    const SLICE = 16 << 10;
    if (size > buf.length) {
      for (let i = 0; i < SLICES; i++) await take(Math.floor(((size - SLICE) * i) / (SLICES - 1)), SLICE);
    }
    return `${size} bytes, sampled sha256 ${h.digest('hex').slice(0, 16)}`;
  } finally {
    await fh.close();
  }
}

export class ResumeState<Report> {
  private constructor(
    readonly dir: string,
    private state: StateFile<Report>,
  ) {}

  /** Layers already finished (0 for a fresh folder). */
  get layersDone(): number {
    return this.state.layersDone;
  }

  /** The finished layers' reports, in order. */
  get reports(): readonly Report[] {
    return this.state.reports;
  }

  /** Where each finished layer ran, in order. */
  get machines(): readonly string[] {
    return this.state.machines;
  }

  /**
   * Opens `<out>.resume/` (creating it when absent) for a run with fingerprint `run`, and locks it.
   * A folder kept by a run with another fingerprint is an InvalidArgumentError that names the
   * differences and leaves the folder alone; a damaged one is a BadCheckpointError; a folder of
   * that name that awq did not write is refused.
   */
  static async open<R>(out: string, run: RunFingerprint): Promise<ResumeState<R>> {
    const dir = resumeDirFor(out);
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw ioError(`creating ${dir}`, err);
    }
    const foreign = (await listDir(dir)).filter((name) => !OURS.test(name));
    if (foreign.length > 0) {
      throw new InvalidArgumentError(
        `${dir} holds files awq did not write (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}): ` +
          'it is where --resume keeps its progress; move them away',
      );
    }
    await takeLock(dir);
    try {
      let state: StateFile<R>;
      const text = await readFile(join(dir, STATE), 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null;
        throw ioError(`reading ${join(dir, STATE)}`, err);
      });
      if (text === null) {
        state = { format: 'awq-resume', version: 1, run, layersDone: 0, hidden: null, reports: [], machines: [] };
      } else {
        state = parseState<R>(text, join(dir, STATE));
        const diff = differences(state.run, run);
        if (diff.length > 0) {
          throw new InvalidArgumentError(
            `${dir} holds ${state.layersDone} finished layers of a different run (${diff.join('; ')}): ` +
              'run with the same model, settings and calibration to continue it, or remove the folder to start afresh',
          );
        }
      }
      const rs = new ResumeState<R>(dir, state);
      await rs.removeStrays();
      return rs;
    } catch (err) {
      await releaseLock(dir);
      throw err;
    }
  }

  /** Reads finished layer `i`: the linears and tensors named, in that order (all must be there). */
  async readLayer(i: number, names: { linears: string[]; tensors: string[] }): Promise<PackedLayer> {
    if (i >= this.state.layersDone) throw new InvalidArgumentError(`layer ${i} is not finished in ${this.dir}`);
    const path = join(this.dir, layerFile(i));
    const f = await SafetensorsFile.open(path);
    try {
      const raw = async (name: string, dtype: string) => {
        const t = f.tensors.get(name);
        if (!t || t.dtype !== dtype) {
          throw new BadCheckpointError(`${path}: no ${dtype} tensor '${name}': the folder is damaged; remove ${this.dir} to start afresh`);
        }
        return { shape: t.shape, bytes: await f.readRaw(name) };
      };
      const linears: AwqLinearTensors[] = [];
      for (const name of names.linears) {
        const qw = await raw(`${name}.qweight`, 'I32');
        const qz = await raw(`${name}.qzeros`, 'I32');
        const sc = await raw(`${name}.scales`, 'F16');
        const bias = f.tensors.has(`${name}.bias`) ? (await raw(`${name}.bias`, 'F16')).bytes : undefined;
        const [inFeatures, words] = qw.shape;
        linears.push({
          name,
          inFeatures,
          outFeatures: words * 8,
          groupSize: inFeatures / Math.max(1, qz.shape[0]),
          qweight: i32(qw.bytes),
          qzeros: i32(qz.bytes),
          scales: u16(sc.bytes),
          bias: bias ? u16(bias) : undefined,
        });
      }
      const tensors: PackedLayer['tensors'] = [];
      for (const name of names.tensors) {
        const t = await raw(name, 'F32');
        tensors.push({ name, shape: [...t.shape], data: new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4) });
      }
      return { linears, tensors };
    } finally {
      await f.close();
    }
  }

  /** The hidden states after the last finished layer, or null when none are kept. */
  async readHidden(): Promise<{ data: Float32Array; cols: number } | null> {
    const h = this.state.hidden;
    if (!h) return null;
    const path = join(this.dir, h.file);
    const data = new Float32Array(h.rows * h.cols);
    const bytes = new Uint8Array(data.buffer);
    let fh: FileHandle | undefined;
    try {
      fh = await open(path, 'r');
      const size = (await fh.stat()).size;
      if (size !== bytes.byteLength) {
        throw new BadCheckpointError(`${path}: ${size} bytes, expected ${bytes.byteLength}: the folder is damaged; remove ${this.dir} to start afresh`);
      }
      for (let off = 0; off < bytes.byteLength; ) {
        const { bytesRead } = await fh.read(bytes, off, Math.min(CHUNK, bytes.byteLength - off), off);
        if (bytesRead === 0) throw new BadCheckpointError(`${path}: ends early`);
        off += bytesRead;
      }
    } catch (err) {
      throw err instanceof AwqError ? err : ioError(`reading ${path}`, err);
    } finally {
      await fh?.close().catch(() => {});
    }
    return { data, cols: h.cols };
  }

  /**
   * Keeps finished layer `i` (which must be the next one), the hidden states after it (null for
   * RTN) and its report. When this returns, the layer survives anything that stops the run.
   */
  async saveLayer(
    i: number,
    layer: PackedLayer,
    hidden: { data: Float32Array; cols: number } | null,
    report: Report,
    machine: string,
  ): Promise<void> {
    if (i !== this.state.layersDone) throw new InvalidArgumentError(`layer ${i}: expected layer ${this.state.layersDone} next`);
    const tmp = join(this.dir, `${layerFile(i)}.tmp-${randomBytes(4).toString('hex')}`);
    const w = await SafetensorsWriter.create(tmp);
    try {
      for (const l of layer.linears) await addAwqLinearTensors(w, l);
      for (const t of layer.tensors) await w.add(t.name, 'F32', t.shape, t.data);
      await w.finish();
      await syncFile(join(tmp, 'model.safetensors'));
      await renameInto(join(tmp, 'model.safetensors'), join(this.dir, layerFile(i)));
    } finally {
      await w.abort();
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
    }
    const previous = this.state.hidden?.file;
    let kept: StateFile<Report>['hidden'] = null;
    if (hidden) {
      kept = { file: hiddenFile(i), rows: hidden.data.length / hidden.cols, cols: hidden.cols };
      await writeDurably(join(this.dir, kept.file), new Uint8Array(hidden.data.buffer, hidden.data.byteOffset, hidden.data.byteLength));
    }
    const next: StateFile<Report> = {
      ...this.state,
      layersDone: i + 1,
      hidden: kept,
      reports: [...this.state.reports, report],
      machines: [...this.state.machines, machine],
    };
    // The renames above reach the disk before the state that names their files.
    await syncDir(this.dir);
    await writeDurably(join(this.dir, STATE), Buffer.from(`${JSON.stringify(next, null, 1)}\n`));
    await syncDir(this.dir);
    this.state = next;
    if (previous && previous !== kept?.file) await rm(join(this.dir, previous), { force: true }).catch(() => {});
  }

  /** Unlocks the folder and leaves it for a later run (removes it when it holds no finished layer). */
  async close(): Promise<void> {
    if (this.state.layersDone === 0) {
      await this.remove();
      return;
    }
    await releaseLock(this.dir);
  }

  /** Deletes the folder (the checkpoint is complete). */
  async remove(): Promise<void> {
    await releaseLock(this.dir);
    await rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }

  /** Temporary files of a run that stopped while writing, layers past layersDone, old hidden states. */
  private async removeStrays(): Promise<void> {
    const keep = new Set([STATE, LOCK]);
    if (this.state.hidden) keep.add(this.state.hidden.file);
    for (let i = 0; i < this.state.layersDone; i++) keep.add(layerFile(i));
    for (const name of await listDir(this.dir)) {
      if (keep.has(name) || !OURS.test(name) || /^lock\./.test(name)) continue;
      try {
        await rm(join(this.dir, name), { recursive: true, force: true });
      } catch (err) {
        throw ioError(`removing ${join(this.dir, name)}`, err);
      }
    }
  }
}

/**
 * A run stopped after its checkpoint was in place and before it removed `<out>.resume` (the last
 * moments of a run; a SIGKILL can land there) leaves both. The checkpoint is that run's, and this
 * run is that run again, when the kept state has every layer, its reports are exactly the
 * checkpoint report's layers (their timings make them unique to the run), and its fingerprint is
 * `run()`'s (asked only when the rest holds: it reads the calibration). Then `found` is called
 * (under the folder's lock; an exception it throws leaves the folder and is rethrown), the folder
 * removed and the checkpoint's report returned. Else null, and nothing is touched.
 */
export async function finishedCheckpoint(
  out: string,
  layers: number,
  run: () => Promise<RunFingerprint>,
  found?: () => void,
): Promise<Record<string, unknown> | null> {
  const dir = resumeDirFor(out);
  const readJson = async (path: string): Promise<Record<string, unknown> | null> => {
    try {
      const v: unknown = JSON.parse(await readFile(path, 'utf8'));
      return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  };
  const state = await readJson(join(dir, STATE));
  const report = await readJson(join(resolve(out), 'awq-report.json'));
  if (!state || !report || state.layersDone !== layers || !Array.isArray(state.reports)) return null;
  if (!isDeepStrictEqual(state.reports, report.layers)) return null;
  const kept = state.run;
  if (kept === null || typeof kept !== 'object' || differences(kept as RunFingerprint, await run()).length > 0) return null;
  await takeLock(dir);
  try {
    found?.();
  } catch (err) {
    await releaseLock(dir);
    throw err;
  }
  await releaseLock(dir);
  await rm(dir, { recursive: true, force: true }).catch(() => {});
  return report;
}

function parseState<R>(text: string, path: string): StateFile<R> {
  const bad = (why: string): never => {
    throw new BadCheckpointError(`${path}: ${why}: not a resume state of this awq version; remove its folder to start afresh`);
  };
  let s: StateFile<R>;
  try {
    s = JSON.parse(text) as StateFile<R>;
  } catch {
    return bad('not valid JSON');
  }
  if (s?.format !== 'awq-resume' || s.version !== 1) bad('unknown format');
  if (!Number.isInteger(s.layersDone) || s.layersDone < 0 || !Array.isArray(s.reports) || s.reports.length !== s.layersDone) {
    bad('inconsistent layer count');
  }
  if (typeof s.run !== 'object' || s.run === null) bad('no run fingerprint');
  if (!Array.isArray(s.machines) || s.machines.length !== s.layersDone) bad('inconsistent machine list');
  const h = s.hidden;
  if (h !== null && !(typeof h?.file === 'string' && /^[\w.-]+$/.test(h.file) && Number.isInteger(h.rows) && Number.isInteger(h.cols))) {
    bad('bad hidden-state entry');
  }
  return s;
}

function differences(kept: RunFingerprint, now: RunFingerprint): string[] {
  const keys = [...new Set([...Object.keys(kept), ...Object.keys(now)])].sort();
  const diff = keys
    .filter((k) => kept[k] !== now[k])
    .map((k) => `${k}: ${JSON.stringify(kept[k] ?? null)} there, ${JSON.stringify(now[k] ?? null)} now`);
  return diff.length > 4 ? [...diff.slice(0, 4), `${diff.length - 4} more`] : diff;
}

/** Lock files this process holds (a lock naming this process is stale unless listed here). */
const heldLocks = new Set<string>();
const LOCK_OWNER = JSON.stringify({ pid: process.pid, host: hostname() });

/**
 * Takes `<dir>/lock`: the owner (pid and host) is written to a temporary file that link() then
 * publishes, so the lock never exists half-written, and only one of two runs can create it. A
 * lock of a process that is gone (same host) is moved aside by rename(), which only one taker
 * wins, and taken. On another host liveness cannot be checked: refused, saying how to clear it.
 */
async function takeLock(dir: string): Promise<void> {
  const path = join(dir, LOCK);
  for (let attempt = 0; attempt < 8; attempt++) {
    const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(tmp, LOCK_OWNER);
      await link(tmp, path);
      heldLocks.add(path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(`locking ${dir}`, err);
    } finally {
      await rm(tmp, { force: true }).catch(() => {});
    }
    const text = await readFile(path, 'utf8').catch(() => null);
    if (text === null) continue; // released meanwhile
    let owner: { pid?: unknown; host?: unknown } = {};
    try {
      owner = JSON.parse(text) as typeof owner;
    } catch {
      // not written by this protocol: stale
    }
    const pid = typeof owner.pid === 'number' ? owner.pid : 0;
    if (typeof owner.host === 'string' && owner.host !== hostname()) {
      throw new InvalidArgumentError(
        `${dir} is locked by process ${pid} on host ${owner.host}; if no awq run uses it any more, delete ${path} and run again`,
      );
    }
    const mine = pid === process.pid;
    if ((mine && heldLocks.has(path)) || (!mine && pid > 0 && isAlive(pid))) {
      throw new InvalidArgumentError(`${dir} is in use by ${mine ? "this process" : `another awq run (process ${pid})`}`);
    }
    const aside = `${path}.stale-${randomBytes(4).toString('hex')}`;
    try {
      await rename(path, aside);
    } catch {
      continue; // another run moved it first
    }
    if ((await readFile(aside, 'utf8').catch(() => null)) !== text) {
      // a fresh lock was published between our read and the rename: give it back
      await link(aside, path).catch(() => {});
    }
    await rm(aside, { force: true }).catch(() => {});
  }
  throw new InvalidArgumentError(`${dir}: could not take its lock (other runs keep taking it)`);
}

/** Removes the lock if this process holds it. */
async function releaseLock(dir: string): Promise<void> {
  const path = join(dir, LOCK);
  if (!heldLocks.delete(path)) return;
  if ((await readFile(path, 'utf8').catch(() => null)) === LOCK_OWNER) await rm(path, { force: true }).catch(() => {});
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    throw ioError(`reading ${dir}`, err);
  }
}

/** Flushes a folder's entries (renames) to disk; best effort where the filesystem cannot. */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // e.g. EINVAL on filesystems without directory fsync
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** Writes `bytes` to a temporary file, flushes it to disk and renames it to `path`. */
async function writeDurably(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, 'w');
    for (let off = 0; off < bytes.byteLength; ) {
      const { bytesWritten } = await fh.write(bytes, off, Math.min(CHUNK, bytes.byteLength - off), off);
      off += bytesWritten;
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await renameInto(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw err instanceof AwqError ? err : ioError(`writing ${path}`, err);
  }
}

async function syncFile(path: string): Promise<void> {
  try {
    const fh = await open(path, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw ioError(`flushing ${path}`, err);
  }
}

async function renameInto(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    throw ioError(`renaming ${from} to ${to}`, err);
  }
}

const i32 = (b: Uint8Array) => new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
const u16 = (b: Uint8Array) => new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
