/** Shared Kubernetes plumbing for the lockmig daemons (controller, agent, webhook). */
export { realClock, FakeClock, flush, type Clock, type Timer } from './clock.js';
export { backoffDelay, type BackoffOptions } from './backoff.js';
export { WorkQueue, runWorkers, type WorkQueueOptions, type WorkResult } from './workqueue.js';
export { ResilientInformer, type ResilientInformerOptions, type InformerEvent } from './informer.js';
export { LeaderElector, LeaseConflict, kubeLeaseStore, type LeaseRecord, type LeaseStore, type LeaderElectorOptions } from './leader.js';
export { EventRecorder, kubeEventSink, type EventSink, type InvolvedObject, type RecorderOptions } from './events.js';
export { startServer, parseAddr, type Check, type RunningServer, type ServerOptions } from './server.js';
export { statusCode, isConflict, isNotFound } from './errors.js';
