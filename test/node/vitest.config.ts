import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Files run one after the other in name order: 00-chart installs, 90-uninstall removes. */
class ByName extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...files].sort((a, b) => a.moduleId.localeCompare(b.moduleId));
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// The real-node suite (test/node/run.sh): one cluster, so one file at a time in one process.
export default defineConfig({
  root,
  test: {
    include: ['test/node/**/*.node.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    fileParallelism: false,
    sequence: { sequencer: ByName },
    testTimeout: 240_000,
    hookTimeout: 300_000,
    reporters: ['default', 'json'],
    outputFile: { json: path.join(root, 'test-results-node.json') },
  },
});
