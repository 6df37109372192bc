import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // End-to-end tests quantize and evaluate a real model on 2 cores.
    testTimeout: 900_000,
    hookTimeout: 900_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
