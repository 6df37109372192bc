/**
 * The API's entry points refuse arguments of the wrong kind with an InvalidArgumentError naming
 * the argument, where they used to throw a plain TypeError or RangeError (no `code`) or run on.
 */
import { describe, expect, it } from 'vitest';

import {
  activationStats,
  denseGemm,
  evaluate,
  fmaPeakGflops,
  Int4Linear,
  InvalidArgumentError,
  loadAwq,
  packAwq,
} from '../dist/index.js';

const loose = (v: unknown) => v as any;

describe('API arguments', () => {
  it('options that are not objects, and required objects that are absent', async () => {
    const tiny = { name: 't', inFeatures: 128, outFeatures: 8, groupSize: 128, qweight: new Int32Array(128), qzeros: new Int32Array(1), scales: new Uint16Array(8).fill(0x3c00) };
    const cases: [string, () => Promise<unknown>, RegExp][] = [
      ['evaluate()', () => evaluate(loose(undefined)), /^evaluate: options .*: expected an object/],
      ['evaluate(null)', () => evaluate(loose(null)), /got null/],
      ['evaluate text 12345', () => evaluate(loose({ model: 'm', text: 12345 })), /^text: expected a string, got number/],
      ['denseGemm()', () => denseGemm(loose(undefined)), /^denseGemm options: expected an object, got undefined/],
      ['fmaPeakGflops(null)', () => fmaPeakGflops(loose(null)), /^options: expected an object, got null/],
      ['packAwq(null)', () => packAwq(loose(null)), /^tensors: expected an object, got null/],
      ['Int4Linear.fromAwq(t, null)', () => Int4Linear.fromAwq(tiny, loose(null)), /^options: expected an object, got null/],
      ['loadAwq(dir, null)', () => loadAwq('nowhere', loose(null)), /^options: expected an object, got null/],
      ['activationStats(x, 1, 2, null)', () => activationStats(new Float32Array(2), 1, 2, loose(null)), /^options: expected an object, got null/],
      // the addon ran anything but 'cuda' on the CPU
      ["activationStats device 'gpu'", () => activationStats(new Float32Array(2), 1, 2, loose({ device: 'gpu' })), /^device: expected 'cpu' or 'cuda', got "gpu"/],
      // an output no Float32Array can hold (k = 0 lets a and b be empty): a RangeError before
      ['denseGemm m x n = 2^40', () => denseGemm({ a: new Float32Array(0), b: new Float32Array(0), m: 2 ** 27, n: 2 ** 13, k: 0 }), /^c: an output of 1099511627776 elements is more than one Float32Array holds/],
    ];
    for (const [label, call, message] of cases) {
      const err = await call().catch((e: unknown) => e);
      expect(err, label).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message, label).toMatch(message);
    }
  });
});
