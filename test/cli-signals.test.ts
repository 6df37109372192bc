/**
 * Ctrl-C / SIGTERM during `awq quantize`: the first signal stops cleanly, a second one exits at
 * once; either way no output folder (nor its temporary twin) is left, and the exit status is the
 * shell's 128 + signal number.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const cli = resolve('dist/cli/main.js');

function leftovers(out: string): string[] {
  return readdirSync(dirname(out)).filter((e) => e === basename(out) || e.startsWith(`${basename(out)}.`));
}

/** Starts an AWQ run long enough to be interrupted, resolving once its temporary folder exists. */
async function startQuantize() {
  // 24 layers on 16 blocks of 128 tokens: several seconds of scale search
  const model = await writeTinyModel({ layers: 24 });
  const dir = scratchDir('awq-signal-');
  const ids = join(dir, 'ids.json');
  writeFileSync(ids, JSON.stringify(Array.from({ length: 16 }, (_, s) => Array.from({ length: 128 }, (_, i) => (s * 977 + i * 31) % 8000))));
  const out = join(dir, 'q');
  const child = spawn(process.execPath, [cli, 'quantize', model, '--out', out, '--calib-tokens', ids, '--seqlen', '128', '--threads', '1'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  // What a shell reports as the status: the exit code, or 128 + the signal that ended the process.
  const status = new Promise<number | null>((res) =>
    child.on('exit', (code, signal) => res(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : null))));
  for (let i = 0; i < 600 && leftovers(out).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  expect(leftovers(out), `no temporary folder appeared; stderr: ${stderr}`).toHaveLength(1);
  return { child, out, exited, status, stderr: () => stderr };
}

describe('awq quantize interrupted by signals', () => {
  it('one SIGTERM stops cleanly with status 143 and removes the temporary folder', async () => {
    const run = await startQuantize();
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(143);
    expect(run.stderr()).toMatch(/SIGTERM received, stopping cleanly/);
    expect(run.stderr()).toMatch(/ERR_AWQ_ABORTED/);
    expect(leftovers(run.out)).toEqual([]);
  }, 60_000);

  it('a second signal exits at once and still removes the temporary folder', async () => {
    const run = await startQuantize();
    run.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 20));
    run.child.kill('SIGINT');
    // The CLI's handlers stay until exit and exit with 130; a second signal that lands in Node's
    // own teardown, after the handlers are gone, ends the process by SIGINT instead: a few
    // milliseconds the CLI cannot cover (1 CI run in about 6 hit it). A shell reports 130 for both,
    // and by then the temporary folder is gone.
    expect(await run.status).toBe(130);
    expect(leftovers(run.out)).toEqual([]);
  }, 60_000);
});
