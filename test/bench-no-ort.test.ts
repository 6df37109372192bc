// `awq bench gemm` where onnxruntime-node cannot load: asking only for its impls times nothing,
// which is an error naming why (it was `"records": []` with status 0).
import { describe, expect, it, vi } from 'vitest';

vi.mock('onnxruntime-node', () => {
  throw new Error('Cannot find module onnxruntime-node (mocked away)');
});

import { benchGemm } from '../dist/bench/gemm.js';
import { InvalidArgumentError } from '../dist/index.js';

describe('awq bench gemm without onnxruntime-node', () => {
  it('an impl list that times nothing here is an error naming why, not an empty result', async () => {
    const err = await benchGemm({ ms: [1], shapes: [[256, 64]], impls: ['ort-acc0', 'ort-acc4'], streamMB: 1, minCalls: 2, minSeconds: 0 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(/^bench gemm: nothing to time \(ort-\* skipped: onnxruntime-node is not installed/);
    // with an impl that runs, the ort-* ones are a note
    const r = await benchGemm({ ms: [1], shapes: [[256, 64]], impls: ['awq', 'ort-acc0'], streamMB: 1, minCalls: 2, minSeconds: 0 });
    expect(r.records.map((x) => x.impl)).toEqual(['awq', 'awq']);
    expect(r.ort).toMatchObject({ skipped: expect.stringMatching(/not installed/) });
  });
});
