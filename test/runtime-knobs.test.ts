/**
 * The README's runtime knobs (AWQ_THREADS, AWQ_ISA, AWQ_POOL_SPIN_US, AWQ_HUGEPAGES) are checked
 * before the native code reads them: a typo used to be taken for the default silently
 * (`AWQ_ISA=AVX2` ran the AVX-512 kernels, `AWQ_THREADS=abc` all cores, 99999 a 1024-thread pool).
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

const cli = resolve('dist/cli/main.js');
const doctor = (env: Record<string, string>, json = false) =>
  spawnSync(process.execPath, [cli, 'doctor', ...(json ? ['--json'] : [])], { encoding: 'utf8', env: { ...process.env, ...env } });

describe('runtime knobs', () => {
  it('a malformed value is an error naming the variable; valid ones are taken', () => {
    for (const [name, value, expected] of [
      ['AWQ_ISA', 'AVX2', /AWQ_ISA: expected 'portable', 'avx2', 'avx512' or 'neon', got "AVX2"/],
      ['AWQ_ISA', 'sse', /AWQ_ISA/],
      ['AWQ_THREADS', 'abc', /AWQ_THREADS: expected an integer from 1 to 1024, got "abc"/],
      ['AWQ_THREADS', '99999', /AWQ_THREADS/],
      ['AWQ_THREADS', '-3', /AWQ_THREADS/],
      ['AWQ_POOL_SPIN_US', '1.5', /AWQ_POOL_SPIN_US/],
      ['AWQ_HUGEPAGES', 'no', /AWQ_HUGEPAGES: expected '0' or '1'/],
    ] as const) {
      const r = doctor({ [name]: value });
      expect(r.status, `${name}=${value}`).not.toBe(0);
      expect(r.stderr, `${name}=${value}`).toMatch(expected);
      expect(r.stderr).toMatch(/ERR_AWQ_INVALID_ARGUMENT/);
    }
    const ok = doctor({ AWQ_ISA: 'portable', AWQ_THREADS: '1', AWQ_POOL_SPIN_US: '0', AWQ_HUGEPAGES: '0' }, true);
    expect(ok.status, ok.stderr).toBe(0);
    const d = JSON.parse(ok.stdout);
    expect(d.cpu.isa).toBe('portable');
    expect(d.cpu.threads).toBe(1);
  });
});
