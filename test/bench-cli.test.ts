// `awq bench gemm` / `awq bench cuda-gemm` from the command line: option values are checked
// before anything is measured (an empty or malformed value is a usage error naming the option),
// a tiny shape finishes with a bounded number of stream copies, and --json prints one object
// with the run's metadata on stdout and JSON-lines log events on stderr.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';

import { beforeAll, describe, expect, it } from 'vitest';

import { MAX_STREAM_COPIES } from '../dist/bench/gemm.js';
import { collectOutput } from './helpers/collect-output.js';

// A usage error comes back at once; a value the old parser let through would start a benchmark,
// which the timeout stops (status null).
const cli = (args: string[], timeout = 10_000) =>
  spawnSync(process.execPath, ['dist/cli/main.js', 'bench', ...args], { encoding: 'utf8', timeout });

function expectUsageError(args: string[], named: RegExp): void {
  const r = cli(args);
  // values commander's parsers refuse exit 2 (usage); checks after parsing are typed errors, 1
  const status = /\(ERR_AWQ_INVALID_ARGUMENT\)/.test(r.stderr) ? 1 : 2;
  expect({ args, status: r.status, stdout: r.stdout }).toEqual({ args, status, stdout: '' });
  expect(r.stderr).toMatch(named);
}

describe('awq bench gemm on the command line', () => {
  // One small run shared by the --json checks: 128x8 is 532 bytes of weights, which --stream-mb 1
  // alone would make 1880 copies (and the default 400 MB, 751880).
  let run: ReturnType<typeof cli>;
  beforeAll(() => {
    run = cli(['gemm', '--json', '--shapes', '128x8', '--m', '1', '--impl', 'awq', '--threads', '1', '--stream-mb', '1'], 25_000);
  });

  it('finishes a tiny shape with a bounded number of stream copies, and says the cap applied', () => {
    expect(run.status).toBe(0);
    const r = JSON.parse(run.stdout);
    expect(r.shapes).toEqual([{ k: 128, n: 8, weightBytes: 532, streamCopies: MAX_STREAM_COPIES, streamCapped: true }]);
    expect(r.notes.join('\n')).toMatch(new RegExp(`k=128 n=8: stream mode capped at ${MAX_STREAM_COPIES} weight copies`));
    expect(r.records.map((x: { impl: string; mode: string }) => `${x.impl} ${x.mode}`)).toEqual(['awq stream', 'awq warm']);
  });

  it('--json prints one object with the metadata the table uses', () => {
    const r = JSON.parse(run.stdout);
    expect(Array.isArray(r)).toBe(false);
    expect(Object.keys(r)).toEqual([
      'awqVersion', 'node', 'binary', 'timestamp', 'settings',
      'machine', 'cpu', 'isa', 'threads', 'bandwidthGBs', 'fmaPeakGflops', 'ort', 'streamMB', 'shapes', 'notes', 'records',
    ]);
    expect(r.awqVersion).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
    expect(r.node).toBe(process.versions.node);
    expect(r.binary).toMatch(/\.node$/);
    expect(Number.isNaN(Date.parse(r.timestamp))).toBe(false);
    expect(r.settings).toEqual({ minCalls: 7, minSeconds: 0.5, group: 128, modes: ['stream', 'warm'] });
    expect(r.threads).toBe(1);
    expect(r.streamMB).toBe(1);
    expect(typeof r.machine).toBe('string');
    expect(typeof r.isa).toBe('string');
    expect(r.cpu.cores).toBeGreaterThan(0);
    expect(Array.isArray(r.cpu.features)).toBe(true);
    expect(r.bandwidthGBs).toBeGreaterThan(0);
    expect(r.fmaPeakGflops).toBeGreaterThan(0);
    expect(r.ort).toEqual({ skipped: 'not requested' });
    for (const x of r.records) {
      expect(x).toMatchObject({ m: 1, k: 128, n: 8, threads: 1, impl: 'awq' });
      expect(x.medianMs).toBeGreaterThan(0);
      // the spread of the timed calls, so a harness can tell a busy machine's median
      expect(x.calls).toBeGreaterThanOrEqual(7);
      expect(x.minMs <= x.p25Ms && x.p25Ms <= x.medianMs && x.medianMs <= x.p75Ms).toBe(true);
    }
  });

  it('--json writes its log lines as JSON-lines events on stderr', () => {
    const lines = run.stderr.split('\n').filter((l) => l !== '');
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) {
      const e = JSON.parse(l);
      expect(e.event).toBe('log');
      expect(typeof e.message).toBe('string');
      expect(e.elapsedMs).toBeGreaterThanOrEqual(0);
    }
    expect(lines.some((l) => /128 copies for stream mode/.test(JSON.parse(l).message))).toBe(true);
  });

  it('an empty option value is a usage error naming the option', () => {
    for (const opt of ['--m', '--shapes', '--threads', '--stream-mb', '--impl']) {
      expectUsageError(['gemm', '--json', opt, ''], new RegExp(`${opt} expects .*got an empty value`));
    }
    for (const opt of ['--m', '--shapes', '--reps']) {
      expectUsageError(['cuda-gemm', '--json', opt, ''], new RegExp(`${opt} expects .*got an empty value`));
    }
  });

  it('rejects malformed lists, a list for a scalar option, and sizes too large to run', () => {
    expectUsageError(['gemm', '--shapes', '4096x11008x5'], /--shapes expects KxN pairs.*got "4096x11008x5"/);
    expectUsageError(['gemm', '--shapes', '4096x'], /--shapes expects KxN pairs/);
    expectUsageError(['gemm', '--m', '0x1'], /--m expects positive decimal integers.*got "0x1"/);
    expectUsageError(['gemm', '--m', '1e3'], /--m expects positive decimal integers.*got "1e3"/);
    expectUsageError(['gemm', '--m', '1,,4'], /--m expects .*an empty item in "1,,4"/);
    expectUsageError(['gemm', '--threads', '1,7'], /--threads expects one positive decimal integer, got "1,7"/);
    expectUsageError(['gemm', '--stream-mb', '0'], /--stream-mb expects one positive decimal integer, from 1 to/);
    expectUsageError(['gemm', '--impl', 'awq,awq'], /--impl names awq twice/);
    expectUsageError(['cuda-gemm', '--reps', '5,6'], /--reps expects one positive decimal integer/);
    expectUsageError(['cuda-gemm', '--reps', '2'], /--reps expects one positive decimal integer, from 3 to 1000, got "2"/);
    expectUsageError(['cuda-gemm', '--shapes', '8192x8192x2'], /--shapes expects KxN pairs/);
    // used to allocate x after minutes of probes and die with "RangeError: Invalid typed array length"
    expectUsageError(['gemm', '--m', '2000000', '--shapes', '4096x4096'], /--m expects .*each from 1 to 65536, got "2000000"/);
    expectUsageError(['gemm', '--shapes', '1048576x8192', '--m', '1'], /shape 1048576x8192 .*k x n = 8589934592 elements/);
    // used to print [] with status 0: the floor runs only at m = 1 in stream mode
    expectUsageError(['gemm', '--impl', 'floor', '--m', '4'], /--impl floor: the floor runs only at m = 1.*nothing to time \(ERR_AWQ_INVALID_ARGUMENT\)/);
  });

  it('SIGTERM stops a run between timed rounds: a signal event, the ERR_AWQ_ABORTED line last, status 143', async () => {
    const child = spawn(process.execPath, ['dist/cli/main.js', 'bench', 'gemm', '--shapes', '1024x1024', '--m', '1', '--impl', 'awq', '--stream-mb', '8', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const { status, stdout, stderr } = await collectOutput(child, (err) => {
      // measuring has begun (the FMA peak is the last probe before the timed rounds)
      if (/FMA peak/.test(err) && child.exitCode === null && !child.killed) child.kill('SIGTERM');
    });
    expect(status, stderr).toBe(143);
    expect(stdout).toBe('');
    const lines = stderr.split('\n').filter((l) => l).map((l) => JSON.parse(l) as { event: string; code?: string });
    expect(lines.filter((l) => l.event === 'signal')).toHaveLength(1);
    expect(lines.at(-1)).toMatchObject({ event: 'error', code: 'ERR_AWQ_ABORTED' });
  }, 60_000);

  // ~133 GiB at the largest m and shape the arrays can hold: refused up front on a machine with less.
  it.skipIf(totalmem() > 120 * 2 ** 30)('refuses a run that needs more memory than the machine has, before measuring', () => {
    expectUsageError(['gemm', '--shapes', '65408x65528', '--m', '65536'], /shape 65408x65528 at m = 65536 needs about .* GiB of memory/);
  });
});
