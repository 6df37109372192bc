/**
 * End to end on the real test model: embedding -> 6 decoder layers (decoderLayerForward) -> final
 * norm + tied lm_head (lmHeadNll), REFERENCE.md section 7 protocol, against section 8's
 * full-precision perplexity. Skipped when ../shared is absent.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { decoderLayerForward, lmHeadNll } from '../dist/index.js';
import { hasShared, Model, MODEL_DIR, SHARED, tokenize } from './helpers/model.js';

// 64 windows of 512 give 127.27 (REFERENCE.md section 8), checked to 0.1%; takes ~40 s on 2 cores.
// Fewer windows (AWQ_TEST_WINDOWS=N) only print the value.
const WINDOWS = Number(process.env.AWQ_TEST_WINDOWS ?? 64);
const EXPECTED: Record<number, number> = { 64: 127.27 };

export async function perplexity(model: Model, ids: Int32Array, seqlen: number): Promise<number> {
  const arch = model.arch();
  let h = model.embed(ids);
  for (let i = 0; i < (model.config.num_hidden_layers as number); i++) h = await decoderLayerForward(arch, model.layer(i), h, seqlen);
  const E = model.tensor('model.embed_tokens.weight');
  const r = await lmHeadNll(h, seqlen, model.tensor('model.norm.weight'), arch.rmsNormEps, E, model.config.vocab_size as number, ids);
  return Math.exp(r.nllSum / r.count);
}

describe.skipIf(!hasShared)('full-precision perplexity of llama-22m (needs ../shared)', () => {
  it(`matches the reference on the first ${WINDOWS} windows of eval.txt`, async () => {
    const model = new Model(MODEL_DIR);
    const all = await tokenize(MODEL_DIR, readFileSync(join(SHARED, 'data', 'eval.txt'), 'utf8'));
    expect(all.length).toBe(400722);
    const ids = all.subarray(0, WINDOWS * 512);
    const ppl = await perplexity(model, ids, 512);
    console.log(`full-precision perplexity, ${WINDOWS} windows: ${ppl.toFixed(3)}`);
    const expected = EXPECTED[WINDOWS];
    if (expected !== undefined) expect(Math.abs(ppl / expected - 1)).toBeLessThan(0.001);
    else expect(ppl).toBeGreaterThan(0);
  });
});
