import { defineConfig } from 'vitest/config';

// Tests run real processes, namespaces and locks: isolate each file in its own process
// (the shim execve()s, koffi holds native state) and keep parallelism at the core count.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // the real-node suite runs on its own: npm run test:node (test/node/run.sh)
    exclude: ['test/node/**', '**/node_modules/**'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
  },
});
