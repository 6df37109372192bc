/** Locations of the shared test assets (../shared next to the repository), and skip reasons. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const sharedDir = join(import.meta.dirname, '..', '..', '..', 'shared');
export const modelDir = join(sharedDir, 'models', 'llama-22m');
export const awqModelDir = join(sharedDir, 'models', 'llama-22m-awq');
export const calibPath = join(sharedDir, 'data', 'calib.jsonl');
export const evalPath = join(sharedDir, 'data', 'eval.txt');
export const hasShared = existsSync(join(modelDir, 'config.json')) && existsSync(evalPath);
export const sharedSkipReason = `../shared (the test model and data) is absent at ${sharedDir}`;
