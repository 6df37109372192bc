/**
 * End to end on the real test model (REFERENCE.md section 8, first 64 windows):
 * full precision and the independent AWQ checkpoint to 0.1%, our RTN and AWQ w4 g128 to 0.3%,
 * and AWQ better than RTN. Skipped without ../shared.
 */
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { evaluate, quantize } from '../dist/index.js';
import { awqModelDir, calibPath, evalPath, hasShared, modelDir, sharedSkipReason } from './helpers/shared.js';
import { scratchDir } from './helpers/scratch.js';

const windows = 64;
const within = (got: number, ref: number, pct: number) => Math.abs(got - ref) / ref <= pct / 100;

describe.skipIf(!hasShared)('llama-22m end to end (first 64 windows)', () => {
  const work = scratchDir('awq-e2e-');
  let rtn = 0;
  let awq = 0;

  it('full-precision perplexity matches the reference (127.27, 0.1%)', async () => {
    const r = await evaluate({ model: modelDir, textPath: evalPath, windows });
    expect(r.windows).toBe(64);
    expect(r.tokens).toBe(64 * 512);
    expect(r.predictedTokens).toBe(64 * 511);
    expect(within(r.perplexity, 127.27, 0.1), `fp ${r.perplexity}`).toBe(true);
  });

  it('the independent AWQ checkpoint evaluates to 128.08 (0.1%)', async () => {
    const r = await evaluate({ model: awqModelDir, textPath: evalPath, windows });
    expect(r.quantized).toBe(true);
    expect(within(r.perplexity, 128.08, 0.1), `reference awq ${r.perplexity}`).toBe(true);
  });

  describe('our checkpoints', () => {
    beforeAll(async () => {
      const calib = { kind: 'jsonl' as const, path: calibPath };
      await quantize({ model: modelDir, out: join(work, 'rtn'), method: 'rtn' });
      rtn = (await evaluate({ model: join(work, 'rtn'), textPath: evalPath, windows })).perplexity;
      const { report } = await quantize({ model: modelDir, out: join(work, 'awq'), calib });
      expect(report.calibration).toMatchObject({ samples: 128, blocks: 90 });
      awq = (await evaluate({ model: join(work, 'awq'), textPath: evalPath, windows })).perplexity;
    });

    it('RTN w4 g128 lands within 0.3% of 129.07', () => {
      expect(within(rtn, 129.07, 0.3) || rtn < 129.07, `rtn ${rtn}`).toBe(true);
    });

    it('AWQ w4 g128 lands within 0.3% of 128.10 and beats RTN', () => {
      expect(within(awq, 128.1, 0.3) || awq < 128.1, `awq ${awq}`).toBe(true);
      expect(awq).toBeLessThan(rtn);
    });
  });
});
if (!hasShared) console.warn(`end-to-end tests skipped: ${sharedSkipReason}`);
