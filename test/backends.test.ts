import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { activationStats, backends, CudaError, CudaHiddenStates, Int4Linear, InvalidArgumentError, resolveBackend, setThreads, version } from '../dist/index.js';
import { cudaBuildUnusable, INTERFACE_VERSION, native } from '../dist/native.js';

const cli = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');

describe('the CUDA build chosen at load', () => {
  it('is set aside when no device answers or when it predates the bindings this TypeScript calls, saying how to rebuild it', () => {
    const fake = (interfaceVersion: number | undefined, devices: number) => ({
      interfaceVersion,
      backends: () => ({ cpu: {} as never, cuda: { compiled: true, devices: Array.from({ length: devices }, () => ({}) as never), reason: devices ? null : 'no CUDA-capable device is detected' } }),
    });
    expect(cudaBuildUnusable(fake(INTERFACE_VERSION, 1))).toBeNull();
    expect(cudaBuildUnusable(fake(INTERFACE_VERSION, 0))).toBe('no device answered: no CUDA-capable device is detected');
    // a build from before interfaceVersion existed is version 1
    expect(cudaBuildUnusable(fake(undefined, 1))).toBe(`it was built for native interface 1, this awq needs ${INTERFACE_VERSION}: rebuild it with \`npm run build:cuda\``);
    expect(cudaBuildUnusable(fake(INTERFACE_VERSION + 1, 1))).toMatch(/built for native interface \d+, this awq needs/);
    // the CPU build this run loaded is of this version
    expect(native().interfaceVersion).toBe(INTERFACE_VERSION);
  });
});

describe('backends and the CLI skeleton', () => {
  it('reports the CPU ISA and threads, and CUDA devices or why none', () => {
    const b = backends();
    expect(['portable', 'avx2', 'avx512', 'neon']).toContain(b.cpu.isa);
    expect(b.cpu.threads).toBeGreaterThanOrEqual(1);
    if (b.cuda === null) expect(b.cudaUnavailable).toMatch(/\w/);
    else expect(b.cuda.devices.length).toBeGreaterThan(0);
  });

  it('resolves --backend: cpu, cuda (typed error saying how to build one), auto (CPU fallback with a note)', () => {
    expect(resolveBackend('cpu', 'fp32')).toMatchObject({ backend: 'cpu', description: expect.stringMatching(/^cpu \(/) });
    expect(() => resolveBackend('tpu' as 'cpu', 'fp32')).toThrow(InvalidArgumentError);
    expect(() => resolveBackend('cpu', 'fp16')).toThrow(/needs the CUDA backend/);
    const bf = resolveBackend('cpu', 'bf16');
    expect(bf).toMatchObject({ backend: 'cpu', precision: 'bf16', description: expect.stringMatching(/bf16/) });
    // without AVX512-BF16 the note says that bf16 runs at fp32 speed
    expect(bf.note === undefined).toBe(backends().cpu.bf16Products);
    // precision 'auto' (the default): bf16 where the CPU runs it natively, else fp32
    expect(resolveBackend('cpu').precision).toBe(backends().cpu.bf16Products && backends().cpu.isa === 'avx512' ? 'bf16' : 'fp32');
    expect(resolveBackend('cpu', 'auto').note).toBeUndefined();
    expect(resolveBackend('cpu', 'fp32')).toMatchObject({ precision: 'fp32', description: expect.not.stringMatching(/bf16/) });
    expect(() => resolveBackend('auto', 'int8')).toThrow(InvalidArgumentError);
    if (backends().cuda === null) {
      expect(() => resolveBackend('cuda', 'fp32')).toThrow(CudaError);
      expect(() => resolveBackend('cuda', 'fp32')).toThrow(/npm run build:cuda/);
      expect(resolveBackend('auto', 'fp32')).toMatchObject({ backend: 'cpu', note: expect.stringMatching(/CUDA not used/) });
      expect(resolveBackend('auto', 'fp16')).toMatchObject({ backend: 'cpu', precision: 'fp32', note: expect.stringMatching(/applies to CUDA only/) });
      expect(resolveBackend('auto', 'bf16')).toMatchObject({ backend: 'cpu', precision: 'bf16', note: expect.stringMatching(/CUDA not used/) });
    } else {
      expect(resolveBackend('auto', 'bf16')).toMatchObject({ backend: 'cuda', description: expect.stringMatching(/bf16/) });
    }
  });

  it('CudaHiddenStates: device-resident hidden states (a typed error saying how to build CUDA without it)', async () => {
    const h = new Float32Array(4 * 8).map((_, i) => i * 0.5 - 3);
    await expect(CudaHiddenStates.upload(h, 3)).rejects.toThrow(InvalidArgumentError);
    if (backends().cuda === null) {
      await expect(CudaHiddenStates.upload(h, 8)).rejects.toThrow(CudaError);
      await expect(CudaHiddenStates.upload(h, 8)).rejects.toThrow(/npm run build:cuda|CUDA/);
      return;
    }
    const d = await CudaHiddenStates.upload(h, 8);
    expect([d.tokens, d.hiddenSize, d.released]).toEqual([4, 8, false]);
    expect(await d.download()).toEqual(h);
    await Promise.all([d.release(), d.release()]);
    await d.release();
    expect(d.released).toBe(true);
    await expect(d.download()).rejects.toThrow(/released/);
  });

  it('resizes the shared thread pool', () => {
    const before = backends().cpu.threads;
    expect(setThreads(1)).toBe(1);
    expect(setThreads(0)).toBe(backends().cpu.cores);
    setThreads(before);
    expect(() => setThreads(-1)).toThrow(/threads/);
  });

  it('resizing the pool while asynchronous calls run neither crashes nor changes their results', async () => {
    // Kernels size per-thread buffers by the pool's size when they start; a setThreads that grew
    // the pool under a running prefill or activationStats wrote past them (a segfault).
    const before = backends().cpu.threads;
    const inF = 1536, outF = 512, g = 128, m = 64;
    const lin = await Int4Linear.fromQuantized({
      q: new Uint8Array(outF * inF).map((_, i) => (i * 7) % 16), zeros: new Uint8Array((outF * inF) / g).fill(8),
      scales: new Float32Array((outF * inF) / g).fill(0.01), inFeatures: inF, outFeatures: outF, groupSize: g,
    });
    const x = new Float32Array(m * inF).map((_, i) => ((i * 13) % 17) / 17 - 0.5);
    const want = await lin.forward(x, m);
    const wantStats = await activationStats(x, m, inF);
    try {
      for (let round = 0; round < 150; round++) {
        const calls = [lin.forward(x, m), lin.forward(x, m), activationStats(x, m, inF), lin.forward(x, m)];
        setThreads(1 + (round % 3));
        const [a, b, stats, c] = await Promise.all(calls);
        // bytes, not toEqual: vitest's deep equality over 32k elements a call would dominate the test
        for (const y of [a, b, c]) expect(sameBits(y, want)).toBe(true);
        expect(sameBits(stats, wantStats)).toBe(true);
      }
    } finally {
      setThreads(before);
      await lin.dispose();
    }
  });

  it('awq --version, --help and doctor', () => {
    expect(execFileSync('node', [cli, '--version'], { encoding: 'utf8' }).trim()).toBe(version);
    expect(execFileSync('node', [cli, '--help'], { encoding: 'utf8' })).toContain('doctor');
    const doc = execFileSync('node', [cli, 'doctor'], { encoding: 'utf8' });
    expect(doc).toMatch(/cpu: (portable|avx2|avx512) kernels, \d+ threads/);
    expect(doc).toMatch(/cuda: /);
    const json = JSON.parse(execFileSync('node', [cli, 'doctor', '--json'], { encoding: 'utf8' }));
    expect(json.cpu.threads).toBeGreaterThan(0);
  });
});

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
