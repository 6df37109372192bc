/**
 * Output folders that appear complete or not at all: every writer works in a temporary folder
 * next to the destination (`<out>.tmp-<pid>-<random>`) and `commit()` renames it into place, so
 * an interrupted run never leaves a folder under the requested name that looks done.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, realpath, rename, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';

import { AwqError, InvalidArgumentError, ioError } from '../errors.js';
import { LEGACY_QUANT_CONFIG } from './awq-format.js';

export interface PrepareOutputOptions {
  /**
   * Replace an existing folder at `out` (only on commit, after everything was written): an empty
   * one or an earlier AWQ output; any other folder is refused (see whyNotReplaceable).
   */
  overwrite?: boolean;
  /** The folder being read: `out` may be neither it nor inside it, nor contain it. */
  inputDir?: string;
  /** Other files or folders the run reads (calibration data): `out` may neither be nor hold one. */
  inputs?: readonly string[];
}

export interface OutputDir {
  /** The final path. */
  readonly out: string;
  /** Where to write; renamed to `out` by commit(). */
  readonly tempDir: string;
  /** Renames the temporary folder into place (replacing `out` only with overwrite). */
  commit(): Promise<void>;
  /** Removes the temporary folder; safe to call more than once and after a failed commit. */
  abort(): Promise<void>;
}

// Temporary folders not yet committed or aborted. A process that exits meanwhile (a second Ctrl-C
// exits at once, with no time for the asynchronous clean-up) removes them on its way out.
const openTempDirs = new Set<string>();
let exitHookInstalled = false;
function trackTempDir(dir: string): void {
  if (!exitHookInstalled) {
    process.on('exit', () => {
      for (const d of openTempDirs) rmSync(d, { recursive: true, force: true });
    });
    exitHookInstalled = true;
  }
  openTempDirs.add(dir);
}

async function exists(path: string): Promise<'dir' | 'other' | null> {
  try {
    return (await lstat(path)).isDirectory() ? 'dir' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(`checking ${path}`, err);
  }
}

/** Resolves symbolic links of the longest existing prefix of `path`. */
async function canonical(path: string): Promise<string> {
  const abs = resolve(path);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return join(await realpath(head), ...tail.reverse());
    } catch {
      const parent = dirname(head);
      if (parent === head) return abs;
      tail.push(basename(head));
      head = parent;
    }
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

async function refuseExisting(out: string, overwrite: boolean): Promise<void> {
  const kind = await exists(out);
  if (kind === 'other') {
    throw new InvalidArgumentError(`output ${out} exists and is not a folder; refusing to replace it`);
  }
  if (kind === 'dir' && !overwrite) {
    // The same command again after a run that committed its output (and was killed before it
    // exited, or simply finished): say the folder is done, not only that it is there.
    if (await isCompleteAwqOutput(out)) {
      throw new InvalidArgumentError(
        `output folder ${out} already exists and holds a complete AWQ checkpoint (awq-report.json); ` +
          'pass --overwrite (overwrite: true) to redo it, or choose another folder',
      );
    }
    throw new InvalidArgumentError(`output folder ${out} already exists; pass --overwrite (overwrite: true) to replace it`);
  }
  if (kind === 'dir') {
    const why = await whyNotReplaceable(out);
    if (why !== null) {
      throw new InvalidArgumentError(
        `output folder ${out} exists and is not an AWQ checkpoint (${why}): --overwrite replaces only an earlier AWQ ` +
          'output or an empty folder, so it is left alone; remove it yourself or choose another folder',
      );
    }
  }
}

/**
 * Replacing deletes the old folder: only an empty one or an earlier AWQ output may go, never what a
 * mistyped --out names (a home folder, a folder of models, another model). An AWQ output is what
 * the readers take for one: config.json's quantization_config says awq; without one, AutoAWQ's
 * quant_config.json or our awq-report.json. Returns why not, or null when the folder may go.
 */
async function whyNotReplaceable(out: string): Promise<string | null> {
  let entries: string[];
  try {
    entries = await readdir(out);
  } catch (err) {
    throw ioError(`listing ${out}`, err);
  }
  if (entries.length === 0) return null;
  const marked = entries.includes('awq-report.json') || entries.includes(LEGACY_QUANT_CONFIG);
  if (!entries.includes('config.json')) return marked ? null : 'no config.json';
  let qc: unknown;
  try {
    qc = (JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as { quantization_config?: unknown } | null)?.quantization_config;
  } catch {
    return 'its config.json does not parse'; // not recognisably ours
  }
  if (qc === undefined || qc === null) return marked ? null : 'its config.json has no quantization_config';
  const method = (qc as { quant_method?: unknown }).quant_method;
  return method === 'awq' ? null : `its config.json's quantization_config says quant_method ${JSON.stringify(method) ?? 'nothing'}`;
}

/**
 * A committed output of this package: our awq-report.json beside a config.json whose
 * quantization_config says quant_method awq (the writer renames the folder into place only when
 * both are written). Anything unreadable is not one.
 */
async function isCompleteAwqOutput(out: string): Promise<boolean> {
  try {
    const entries = await readdir(out);
    if (!entries.includes('awq-report.json') || !entries.includes('config.json')) return false;
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as { quantization_config?: { quant_method?: unknown } } | null;
    return config?.quantization_config?.quant_method === 'awq';
  } catch {
    return false;
  }
}

/**
 * Temporary folders of `out` (`<out>.tmp-<pid>-*`, `<out>.old-<pid>-*`) whose process is gone
 * from this machine: left by a run that was killed (SIGKILL, a crash, a power cut). They are only
 * reported: on a shared file system the pid may be another machine's live run.
 */
export async function staleTempDirs(out: string): Promise<string[]> {
  const outAbs = resolve(out);
  let entries: string[];
  try {
    entries = await readdir(dirname(outAbs));
  } catch {
    return [];
  }
  const prefix = `${basename(outAbs)}.`;
  return entries
    .filter((e) => {
      const m = e.startsWith(prefix) ? /^(?:tmp|old)-(\d+)-[0-9a-f]+$/.exec(e.slice(prefix.length)) : null;
      return m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]));
    })
    .map((e) => join(dirname(outAbs), e));
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/**
 * Checks, creating nothing, that the run may write `out`: it is not an input nor inside one, holds
 * no input, and exists only with overwrite (then as an earlier AWQ output or an empty folder). Returns the
 * absolute path. prepareOutputDir checks the same; callers with slow work before it (the pipeline's
 * calibration) check first.
 */
export async function checkOutputTarget(out: string, opts: PrepareOutputOptions = {}): Promise<string> {
  if (typeof out !== 'string' || out === '') throw new InvalidArgumentError(`out: expected a folder path, got ${JSON.stringify(out)}`);
  const outAbs = resolve(out);
  const o = await canonical(outAbs);
  const inputs = [...(opts.inputDir !== undefined ? [{ path: opts.inputDir, folder: true }] : []), ...(opts.inputs ?? []).map((path) => ({ path, folder: false }))];
  for (const input of inputs) {
    const i = await canonical(input.path);
    if (isInside(o, i)) {
      throw new InvalidArgumentError(
        input.folder
          ? `output folder ${out} is ${o === i ? 'the input folder' : `inside the input folder ${input.path}`}; the input is never modified: choose a folder outside it`
          : `output folder ${out} is ${o === i ? 'the input' : 'inside the input'} ${input.path}; choose another folder`,
      );
    }
    if (isInside(i, o)) {
      throw new InvalidArgumentError(
        `output folder ${out} holds the input ${input.path}; writing or replacing it would touch the input: choose a folder outside it`,
      );
    }
  }
  await refuseExisting(outAbs, opts.overwrite ?? false);
  return outAbs;
}

export async function prepareOutputDir(out: string, opts: PrepareOutputOptions = {}): Promise<OutputDir> {
  const outAbs = await checkOutputTarget(out, opts);
  const tempDir = `${outAbs}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(dirname(outAbs), { recursive: true });
    await mkdir(tempDir);
  } catch (err) {
    throw ioError(`creating ${tempDir}`, err);
  }
  trackTempDir(tempDir);

  let state: 'open' | 'committed' | 'aborted' = 'open';
  return {
    out: outAbs,
    tempDir,
    async commit() {
      if (state !== 'open') throw new InvalidArgumentError(`output ${outAbs} was already ${state}`);
      try {
        // Checked again: the folder may have appeared while we were writing.
        await checkOutputTarget(outAbs, opts);
        if ((await exists(outAbs)) === 'dir') {
          // Move the old folder aside first: renaming onto a non-empty folder fails.
          const old = `${outAbs}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
          await rename(outAbs, old);
          try {
            await rename(tempDir, outAbs);
          } catch (err) {
            await rename(old, outAbs).catch(() => {});
            throw err;
          }
          // The new checkpoint is in place: failing to delete the replaced one must not fail the run
          // (a caller would retry into "already exists"); a later run reports it as left behind.
          await rm(old, { recursive: true, force: true }).catch(() => {});
        } else {
          await rename(tempDir, outAbs);
        }
        state = 'committed';
        openTempDirs.delete(tempDir);
      } catch (err) {
        await rm(tempDir, { recursive: true, force: true }).catch(() => {});
        openTempDirs.delete(tempDir);
        state = 'aborted';
        throw err instanceof AwqError ? err : ioError(`moving ${tempDir} to ${outAbs}`, err);
      }
    },
    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await rm(tempDir, { recursive: true, force: true }).catch(() => {});
      openTempDirs.delete(tempDir);
    },
  };
}
