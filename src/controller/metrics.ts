/** Prometheus metrics of the controller (prom-client), registered on a registry passed in. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface ControllerMetrics {
  readonly reconciles: Counter<'result'>;
  readonly reconcileDuration: Histogram<'result'>;
  readonly locksMoved: Counter<'kind'>;
  readonly failures: Counter<'reason'>;
  readonly transitions: Counter<'reason'>;
  readonly informerRestarts: Counter<'informer'>;
  readonly isLeader: Gauge;
  readonly queueDepth: Gauge;
}

export function createControllerMetrics(registry: Registry): ControllerMetrics {
  const r = [registry];
  return {
    reconciles: new Counter({ name: 'lockmig_controller_reconciles_total', help: 'Reconcile passes by result (ok, error, conflict).', labelNames: ['result'], registers: r }),
    reconcileDuration: new Histogram({
      name: 'lockmig_controller_reconcile_duration_seconds', help: 'Duration of one reconcile pass including API writes.', labelNames: ['result'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: r,
    }),
    locksMoved: new Counter({ name: 'lockmig_controller_locks_moved_total', help: 'Locks recorded by completed checkpoints, by kind.', labelNames: ['kind'], registers: r }),
    failures: new Counter({ name: 'lockmig_controller_checkpoint_failures_total', help: 'Checkpoints that reached Failed, by reason.', labelNames: ['reason'], registers: r }),
    transitions: new Counter({ name: 'lockmig_controller_transitions_total', help: 'Ready-condition transitions, by new reason.', labelNames: ['reason'], registers: r }),
    informerRestarts: new Counter({ name: 'lockmig_controller_informer_restarts_total', help: 'Informer restarts after errors.', labelNames: ['informer'], registers: r }),
    isLeader: new Gauge({ name: 'lockmig_controller_is_leader', help: '1 while this replica holds the leader lease.', registers: r }),
    queueDepth: new Gauge({ name: 'lockmig_controller_queue_depth', help: 'Keys waiting in the work queue.', registers: r }),
  };
}
