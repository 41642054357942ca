import { clusterSuite } from './suite-config.js';

// The real-node suite (`npm run test:node`, test/node/run.sh).
export default clusterSuite('test/node/*.node.test.ts', 'test-results-node.json', 240_000);
