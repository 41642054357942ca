/** Public surface of the controller (used by `lockmig controller` and by tests). */
/** The pure decision function and its inputs/outputs. */
export { reconcile, setCondition, jsonEqual, DEFAULT_CONFIG, type RawCheckpoint, type PodView, type ReconcileConfig, type ReconcileResult, type EventSpec } from './reconcile.js';
/** What a status write must respect (the CRD's limits, merge patch semantics). */
export { MAX_CONDITIONS, MAX_MESSAGE_LENGTH, fitMessage, capConditions } from './status-write.js';
/** Applies a ReconcileResult to the API server (metadata + status merge patches, TTL delete). */
export { applyResult, kubeCheckpointApi, FencedError, type CheckpointApi, type ApplyOutcome } from './writer.js';
/** The informer + work-queue loop. */
export { Controller, type ControllerDeps, type CheckpointObject } from './controller.js';
/** Wiring: clients, servers, leader election. */
export { startController, ownNamespace, type ControllerOptions, type RunningController } from './main.js';
export { createControllerMetrics, type ControllerMetrics } from './metrics.js';
