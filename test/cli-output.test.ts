/**
 * What the CLI writes when things go wrong: exit statuses by kind of failure (0 / 1 AwqError /
 * 2 usage / 70 internal / 141 reader of stdout gone), errors as one JSON line on stderr with
 * --json, and write failures on stdout (EPIPE, a full disk) or stderr (reader gone) handled
 * without a stack trace.
 */
import { spawn, type StdioOptions } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { collectOutput, type Outcome } from './helpers/collect-output.js';
import { scratchDir } from './helpers/scratch.js';
import { evalPath, hasShared, modelDir, sharedSkipReason } from './helpers/shared.js';

const cli = resolve('dist/cli/main.js');

/**
 * Runs the CLI. `close` names the pipes destroyed right after the spawn, before the CLI can write
 * (their reader is gone: writes fail with EPIPE); `stdout` may be a file descriptor.
 */
function run(args: string[], opts: { close?: Array<'stdout' | 'stderr'>; stdout?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Outcome> {
  const stdio: StdioOptions = ['ignore', opts.stdout ?? 'pipe', 'pipe'];
  const child = spawn(process.execPath, [cli, ...args], { stdio, env: { ...process.env, ...opts.env } });
  for (const name of opts.close ?? []) child[name]!.destroy();
  return collectOutput(child);
}

/** The stderr lines, each parsed as JSON (fails on a line that is not). */
function jsonLines(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`stderr line is not JSON: ${l}`);
      }
    });
}

const dir = scratchDir('awq-cli-output-');
const emptyText = join(dir, 'empty.txt');
writeFileSync(emptyText, '');

describe('awq errors and exit statuses', () => {
  it('with --json a usage error is one JSON line on stderr (code ERR_AWQ_USAGE) and exit status 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['eval', 'm', '--text', emptyText, '--windows', '0', '--json'], /--windows expects one positive decimal integer, from 1 to 9007199254740991, got "0"/],
      [['eval', 'm', '--text', emptyText, '--backend', 'gpu', '--json'], /'gpu' is invalid/],
      [['eval', 'm', '--text', emptyText, '--no-such-option', '--json'], /unknown option '--no-such-option'/],
      [['eval', 'm', '--json'], /required option '--text <file>' not specified/],
      [['bench', 'foo', '--json'], /unknown command 'foo'/],
      [['help', 'frob', '--json'], /^unknown command 'frob' \(--help lists them\)$/],
      // a window of 1 token predicts nothing: a usage error like 0, not a run that fails later
      [['eval', 'm', '--text', emptyText, '--seqlen', '1', '--json'], /--seqlen expects one positive decimal integer, from 2 to/],
    ];
    for (const [args, message] of cases) {
      const r = await run(args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stdout).toBe('');
      const lines = jsonLines(r.stderr);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatchObject({ event: 'error', code: 'ERR_AWQ_USAGE', name: 'UsageError', exitCode: 2 });
      expect(lines[0].message).toMatch(message);
      expect(lines[0].message).not.toMatch(/^error:/);
    }
  });

  it('without --json a usage error keeps commander\'s message and the help, with exit status 2', async () => {
    const r = await run(['eval', 'm', '--text', emptyText, '--windows', '0']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^error: option '--windows <n>' argument '0' is invalid/);
    expect(r.stderr).toMatch(/Usage: awq eval \[options\] <folder>/);
    const none = await run(['bench']);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/Usage: awq bench/);
    // help and version are not errors
    expect((await run(['--help'])).status).toBe(0);
    expect((await run(['--version'])).status).toBe(0);
  });

  it('with --json a bad-input error is a JSON line after the progress lines, exit status 1', async () => {
    // a missing model folder: an AwqError before any model is read (no test model needed)
    const r = await run(['eval', join(dir, 'absent'), '--text', emptyText, '--json']);
    expect(r.status, r.stderr).toBe(1);
    const lines = jsonLines(r.stderr);
    const last = lines.at(-1)!;
    expect(last).toMatchObject({ event: 'error', exitCode: 1 });
    expect(last.code).toMatch(/^ERR_AWQ_/);
    expect(lines.slice(0, -1).every((l) => l.event === 'progress')).toBe(true);
    // plain form unchanged
    const plain = await run(['inspect', join(dir, 'absent')]);
    expect(plain.status).toBe(1);
    expect(plain.stderr).toMatch(/^awq: .*absent: no such file or folder \(ERR_AWQ_INVALID_ARGUMENT\)\n$/);
    const json = await run(['inspect', join(dir, 'absent'), '--json']);
    expect(json.status).toBe(1);
    expect(jsonLines(json.stderr)).toEqual([
      { event: 'error', code: 'ERR_AWQ_INVALID_ARGUMENT', name: 'InvalidArgumentError', message: `${join(dir, 'absent')}: no such file or folder`, exitCode: 1 },
    ]);
  });

  it.skipIf(!hasShared)('an evaluation text of 0 tokens: ERR_AWQ_INVALID_ARGUMENT as a JSON line, exit status 1', async () => {
    const r = await run(['eval', modelDir, '--text', emptyText, '--json']);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toBe('');
    const lines = jsonLines(r.stderr);
    expect(lines.at(-1)).toMatchObject({ event: 'error', code: 'ERR_AWQ_INVALID_ARGUMENT', name: 'InvalidArgumentError', exitCode: 1 });
    expect(lines.at(-1)!.message).toMatch(/evaluation text has 0 tokens/);
  });

  it.skipIf(!hasShared)('quantize refuses token ids that would wrap in 32 bits, non-UTF-8 calibration text and non-zstd .zst, naming the file', async () => {
    const quantize = (calib: string[]) => run(['quantize', modelDir, '--out', join(dir, 'q'), ...calib, '--samples', '8', '--seqlen', '128', '--threads', '1', '--quiet']);
    // 2^40 used to become token 0 (an Int32Array keeps the low 32 bits), 2^31 a negative id
    for (const id of [2 ** 40, 2 ** 31]) {
      const ids = join(dir, `ids-${id}.json`);
      writeFileSync(ids, JSON.stringify([Array(128).fill(1), [...Array(127).fill(2), id]]));
      const r = await quantize(['--calib-tokens', ids]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toBe(`awq: ${ids}: sample 1, position 127: token id ${id} is outside the model's vocabulary (vocab_size 8192) (ERR_AWQ_INVALID_ARGUMENT)\n`);
    }
    const latin1 = join(dir, 'latin1.jsonl');
    writeFileSync(latin1, Buffer.from('{"text": "caf\xe9 au lait"}\n'.repeat(200), 'latin1'));
    const r = await quantize(['--calib', latin1]);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toBe(`awq: ${latin1}: not UTF-8 text (convert it first, e.g. with iconv) (ERR_AWQ_INVALID_ARGUMENT)\n`);
    const zst = join(dir, 'bad.jsonl.zst');
    writeFileSync(zst, 'not zstd');
    const z = await quantize(['--calib', zst]);
    expect(z.status, z.stderr).toBe(1);
    // the decompressor's message (it was "0": fzstd's error code)
    expect(z.stderr.startsWith(`awq: cannot read calibration file ${zst}: `), z.stderr).toBe(true);
    expect(z.stderr).toMatch(/zst: [A-Za-z][^\n]* \(ERR_AWQ_IO\)\n$/);
    expect(existsSync(join(dir, 'q'))).toBe(false);
  });

  it.skipIf(!hasShared)('with --json a SIGTERM is a signal event and an ERR_AWQ_ABORTED error line, status 143', async () => {
    const child = spawn(process.execPath, [cli, 'eval', modelDir, '--text', evalPath, '--seqlen', '64', '--threads', '1', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const { status, stdout, stderr } = await collectOutput(child, (err) => {
      if (err.includes('"stage":"eval"') && !child.killed) child.kill('SIGTERM');
    });
    expect(status, stderr).toBe(143);
    expect(stdout).toBe('');
    const lines = jsonLines(stderr);
    expect(lines.find((l) => l.event === 'signal')).toMatchObject({ signal: 'SIGTERM' });
    expect(lines.at(-1)).toMatchObject({ event: 'error', code: 'ERR_AWQ_ABORTED', exitCode: 143 });
  });

  it('a native binary that fails to load is ERR_AWQ_NATIVE_LOAD (1); one that is not ours is an internal error (70)', async () => {
    const load = await run(['doctor', '--json'], { env: { AWQ_NATIVE_BINARY: join(dir, 'nonexistent.node') } });
    expect(load.status).toBe(1);
    expect(jsonLines(load.stderr)).toMatchObject([{ event: 'error', code: 'ERR_AWQ_NATIVE_LOAD', exitCode: 1 }]);
    const fake = join(dir, 'fake.cjs');
    writeFileSync(fake, 'module.exports = {};\n');
    const bug = await run(['doctor', '--json'], { env: { AWQ_NATIVE_BINARY: fake } });
    expect(bug.status).toBe(70);
    expect(jsonLines(bug.stderr)).toMatchObject([{ event: 'error', code: 'ERR_AWQ_INTERNAL', name: 'TypeError', exitCode: 70 }]);
    const plain = await run(['doctor'], { env: { AWQ_NATIVE_BINARY: fake } });
    expect(plain.status).toBe(70);
    expect(plain.stderr).toMatch(/^awq: unexpected error: TypeError/);
  });
});

describe('awq write failures on stdout and stderr', () => {
  it('a reader of stdout that went away (| head -c 1) ends the run quietly with status 141', async () => {
    for (const args of [['doctor', '--json'], ['doctor'], ['--help'], ['--version']]) {
      const r = await run(args, { close: ['stdout'] });
      expect(r.signal, args.join(' ')).toBeNull();
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(141);
      expect(r.stderr, args.join(' ')).toBe('');
    }
  });

  it.skipIf(!existsSync('/dev/full'))('stdout on a full disk (/dev/full) is ERR_AWQ_IO with status 1, plain or JSON', async () => {
    const full = openSync('/dev/full', 'w');
    try {
      for (const args of [['doctor'], ['--version'], ['--help']]) {
        const r = await run(args, { stdout: full });
        expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(1);
        expect(r.stderr).toMatch(/^awq: writing to stdout: no space left on device.*\(ERR_AWQ_IO\)\n$/);
      }
      const r = await run(['doctor', '--json'], { stdout: full });
      expect(r.status, r.stderr).toBe(1);
      expect(jsonLines(r.stderr)).toMatchObject([{ event: 'error', code: 'ERR_AWQ_IO', name: 'IoError', exitCode: 1 }]);
      expect(jsonLines(r.stderr)[0].message).toMatch(/^writing to stdout: no space left on device/);
    } finally {
      closeSync(full);
    }
  });

  it.skipIf(!hasShared)('eval whose stderr reader went away still runs and prints its result on stdout', async () => {
    const text = join(dir, 'small.txt');
    writeFileSync(text, readFileSync(evalPath, 'utf8').slice(0, 2000));
    for (const mode of [['--json'], []]) {
      const r = await run(['eval', modelDir, '--text', text, '--seqlen', '64', '--windows', '1', '--threads', '1', ...mode], { close: ['stderr'] });
      expect(r.signal).toBeNull();
      expect(r.status, `eval ${mode.join(' ')}`).toBe(0);
      if (mode.length) expect(JSON.parse(r.stdout)).toMatchObject({ windows: 1, seqlen: 64, predictedTokens: 63 });
      else expect(r.stdout).toMatch(/^perplexity \d+\.\d+ over 1 windows of 64 tokens/);
    }
  });
});

if (!hasShared) console.warn(`CLI output tests on the real model skipped: ${sharedSkipReason}`);
