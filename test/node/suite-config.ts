import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type UserConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Files run one after the other in name order (the real-node suite: 00-chart installs, 90-uninstall removes). */
class ByName extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...files].sort((a, b) => a.moduleId.localeCompare(b.moduleId));
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * A suite on the one cluster of test/node/run.sh: one file at a time in one process, in name
 * order, its own JSON report (counted by .ci/run).
 */
export function clusterSuite(include: string, report: string, testTimeout: number): UserConfig {
  return defineConfig({
    root,
    test: {
      include: [include],
      pool: 'forks',
      poolOptions: { forks: { singleFork: true } },
      fileParallelism: false,
      sequence: { sequencer: ByName },
      testTimeout,
      hookTimeout: 300_000,
      reporters: ['default', 'json'],
      outputFile: { json: path.join(root, report) },
    },
  });
}
