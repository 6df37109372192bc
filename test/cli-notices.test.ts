/**
 * Notices of a run (source tensors not written, a folder a killed run left, a fallback) reach the
 * user however stderr is read: a line of their own above the progress bar on a terminal (as the
 * bar's label they lasted one redraw), `awq: ...` lines when piped, `{"event":"notice"}` lines
 * with --json. And a terminal that goes away (SIGHUP) stops the run as Ctrl-C does.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { collectOutput, type Outcome } from './helpers/collect-output.js';
import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const cli = resolve('dist/cli/main.js');

/** util-linux `script`: runs a command on a pseudo-terminal (how a user's terminal looks to the CLI). */
const haveScript = (() => {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function run(cmd: string, args: string[]): Promise<Outcome> {
  return collectOutput(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** A tiny model with a tensor no architecture reads, and a temporary folder a killed run left beside `out`. */
async function setup(): Promise<{ model: string; out: string; stale: string; notes: RegExp[] }> {
  const model = await writeTinyModel({ vocab: 256, layers: 1, extraTensors: ['model.vision_tower.weight'] });
  const parent = scratchDir('awq-notices-');
  const out = join(parent, 'q');
  const stale = join(parent, `q.tmp-${2 ** 22 + 1}-0badc0de`); // above Linux's largest pid: its process is gone
  mkdirSync(stale);
  const notes = [/1 tensor of .* is not part of a llama model and will not be written: model\.vision_tower\.weight/, /q\.tmp-4194305-0badc0de was left by a run that was killed/];
  return { model, out, stale, notes };
}

describe('awq quantize notices', () => {
  it('are {"event":"notice"} lines with --json and awq: lines when stderr is piped', async () => {
    const { model, out, notes } = await setup();
    const json = await run(process.execPath, [cli, 'quantize', model, '--out', out, '--method', 'rtn', '--json']);
    expect(json.status, json.stderr).toBe(0);
    const events = json.stderr.split('\n').filter((l) => l).map((l) => JSON.parse(l) as { event: string; message?: string });
    const notices = events.filter((e) => e.event === 'notice').map((e) => e.message ?? '');
    for (const re of notes) expect(notices.filter((m) => re.test(m)), String(re)).toHaveLength(1);
    expect(events.filter((e) => e.event === 'progress' && notes.some((re) => re.test(e.message ?? '')))).toEqual([]);

    const again = await setup();
    const plain = await run(process.execPath, [cli, 'quantize', again.model, '--out', again.out, '--method', 'rtn']);
    expect(plain.status, plain.stderr).toBe(0);
    for (const re of notes) expect(plain.stderr).toMatch(new RegExp(`^awq: .*?${re.source}`, 'm'));
  });

  it.skipIf(!haveScript)('are lines of their own above the progress bar on a terminal', async () => {
    const { model, out, notes } = await setup();
    // script -e: its status is the command's; the terminal's output (bar and notices) is its stdout
    const command = [process.execPath, cli, 'quantize', model, '--out', out, '--method', 'rtn'].map(quote).join(' ');
    const r = await run('script', ['-q', '-e', '-c', command, '/dev/null']);
    expect(r.status, r.stdout).toBe(0);
    // line wrapping on for the notice (the bar turns it off: a long one would be cut at the edge)
    for (const re of notes) expect(r.stdout).toMatch(new RegExp(`\\x1b\\[2K\\x1b\\[\\?7hawq: .*?${re.source}[^\\n]*\\r?\\n\\x1b\\[\\?7l`));
    expect(existsSync(join(out, 'config.json'))).toBe(true);
  });

  it('--method rtn names the calibration and search options it ignores; conflicting or missing values are usage errors', async () => {
    const { model, out } = await setup();
    const r = await run(process.execPath, [cli, 'quantize', model, '--out', out, '--method', 'rtn', '--samples', '3', '--no-clip', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const notices = r.stderr.split('\n').filter((l) => l).map((l) => JSON.parse(l) as { event: string; message?: string }).filter((e) => e.event === 'notice');
    expect(notices.map((e) => e.message)).toContain('--method rtn calibrates and searches nothing: --samples, --clip / --no-clip ignored');
    const usage: [string[], RegExp][] = [
      [['--out', `${out}-2`, '--calib', 'a.jsonl', '--calib-tokens', 'b.json'], /option '--calib <file>' cannot be used with option '--calib-tokens <file>'/],
      // commander took the next option as --out's value: a folder named "--json" was written
      [['--out', '--json'], /--out expects a path, got \\"--json\\", an option: its value is missing/],
    ];
    for (const [args, re] of usage) {
      const u = await run(process.execPath, [cli, 'quantize', model, ...args, '--json']);
      expect(u.status, u.stderr).toBe(2);
      expect(u.stderr).toMatch(re);
    }
    expect(existsSync('--json')).toBe(false);
  });

  it('SIGHUP (the terminal went away) stops the run cleanly: status 129, no folder left behind', async () => {
    // --method awq on a calibration that takes a while; the signal comes after the first progress line
    const model = await writeTinyModel({ vocab: 256, layers: 4, hidden: 256, intermediate: 512 });
    const ids = join(scratchDir('awq-hup-ids-'), 'ids.json');
    writeFileSync(ids, JSON.stringify(Array.from({ length: 32 }, (_, i) => Array.from({ length: 256 }, (_, j) => (i * 31 + j * 7) % 256))));
    const parent = scratchDir('awq-hup-');
    const out = join(parent, 'q');
    const args = ['quantize', model, '--out', out, '--calib-tokens', ids, '--samples', '32', '--seqlen', '256', '--threads', '1', '--json'];
    const child = spawn(process.execPath, [cli, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let sent = false;
    const { status, stderr } = await collectOutput(child, (err) => {
      if (!sent && /"stage":"layer"/.test(err)) {
        sent = true;
        child.kill('SIGHUP');
      }
    });
    expect(sent, stderr).toBe(true);
    expect(status, stderr).toBe(129);
    expect(stderr).toMatch(/"event":"signal","signal":"SIGHUP"/);
    expect(readdirSync(parent)).toEqual([]);
  });
});
