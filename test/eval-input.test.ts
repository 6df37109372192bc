/**
 * What `evaluate` / `awq eval` take as text and windows: UTF-8 only (a binary or Latin-1 file used to
 * be scored as replacement characters), and more windows asked for than the text holds evaluates
 * those it holds, says so, and reports both counts.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { evaluate, InvalidArgumentError, type ProgressEvent } from '../dist/index.js';
import { hasShared, sharedSkipReason } from './helpers/shared.js';
import { scratchDir } from './helpers/scratch.js';
import { writeTinyModel } from './helpers/tiny-model.js';

describe.skipIf(!hasShared)(`evaluation text and windows${hasShared ? '' : ` (skipped: ${sharedSkipReason})`}`, () => {
  it('refuses text that is not UTF-8, naming the file', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const file = join(scratchDir('awq-eval-'), 'latin1.txt');
    writeFileSync(file, Buffer.from('caf\xe9 au lait, '.repeat(200), 'latin1'));
    const err = await evaluate({ model, textPath: file, seqlen: 64 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toBe(`${file}: not UTF-8 text (convert it first, e.g. with iconv)`);
  });

  it('more windows than the text holds: evaluates those, with a note and availableWindows', async () => {
    const model = await writeTinyModel({ layers: 1 });
    const events: ProgressEvent[] = [];
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(40);
    const r = await evaluate({ model, text, seqlen: 64, windows: 1000, onProgress: (e) => events.push(e) });
    expect(r.windows).toBe(r.availableWindows);
    expect(r.availableWindows).toBeGreaterThan(0);
    expect(events.some((e) => e.message === `1000 windows asked for, the text holds ${r.availableWindows}: evaluating ${r.availableWindows}`)).toBe(true);
    const one = await evaluate({ model, text, seqlen: 64, windows: 1 });
    expect([one.windows, one.availableWindows]).toEqual([1, r.availableWindows]);
  });
});
