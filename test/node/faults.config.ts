import { clusterSuite } from './suite-config.js';

// The fault suite (`npm run test:faults`: test/node/run.sh with LOCKMIG_NODE_SUITES=faults), on the
// same kind of cluster as the real-node suite.
export default clusterSuite('test/node/faults/*.fault.test.ts', 'test-results-faults.json', 400_000);
