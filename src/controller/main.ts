/**
 * Wiring of `lockmig controller`: builds the clients (only here), the informers, metrics, the
 * health server and leader election, and runs until the signal aborts. The decisions live in
 * reconcile.ts, the writes in writer.ts, the loop in controller.ts.
 */
import os from 'node:os';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesListObject, type V1Pod } from '@kubernetes/client-node';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { GROUP, PLURAL, VERSION } from '../api/lockcheckpoint.js';
import { realClock, type Clock } from '../kube/clock.js';
import { EventRecorder, kubeEventSink } from '../kube/events.js';
import { ResilientInformer } from '../kube/informer.js';
import { LeaderElector, kubeLeaseStore } from '../kube/leader.js';
import { startServer, type RunningServer } from '../kube/server.js';
import type { Logger } from '../log/logger.js';
import { Controller, type CheckpointObject } from './controller.js';
import { createControllerMetrics } from './metrics.js';
import { DEFAULT_CONFIG, type ReconcileConfig } from './reconcile.js';
import { kubeCheckpointApi } from './writer.js';
import { isNotFound } from '../kube/errors.js';

export interface ControllerOptions {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  /** watch one namespace only; undefined = all namespaces */
  readonly namespace?: string;
  /** undefined = no metrics server */
  readonly metricsAddr?: string;
  /** undefined = no health server */
  readonly healthAddr?: string;
  readonly leaderElect?: boolean;
  readonly leaseNamespace?: string;
  readonly leaseName?: string;
  /** create the Lease when it is missing (default true; false when the installation owns it) */
  readonly leaseCreate?: boolean;
  readonly identity?: string;
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  readonly workers?: number;
  readonly config?: Partial<ReconcileConfig>;
  readonly clock?: Clock;
  /** for tests: a registry per instance (default: a fresh one) */
  readonly registry?: Registry;
  /** called once servers listen (tests read the ports) */
  readonly onListening?: (s: { metrics?: RunningServer; health?: RunningServer }) => void;
}

/** The namespace this pod runs in (for the Lease), from the downward API or the service account. */
export function ownNamespace(): string | undefined {
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  try {
    return fs.readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || undefined;
  } catch {
    return undefined; // not in a pod
  }
}

export interface RunningController {
  readonly controller: Controller;
  readonly elector?: LeaderElector;
  readonly registry: Registry;
  readonly identity: string;
  /** resolves when everything has stopped */
  readonly done: Promise<void>;
}

export async function startController(opts: ControllerOptions, signal: AbortSignal): Promise<RunningController> {
  const clock = opts.clock ?? realClock;
  const kc = opts.kubeConfig;
  const logger = opts.logger;
  const identity = opts.identity ?? `${process.env.POD_NAME ?? os.hostname()}_${randomBytes(4).toString('hex')}`;
  const registry = opts.registry ?? new Registry();
  if (!opts.registry) collectDefaultMetrics({ register: registry, prefix: 'lockmig_controller_' });
  const metrics = createControllerMetrics(registry);

  const custom = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);
  const ns = opts.namespace;
  const ckPath = ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}` : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
  const podPath = ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods';
  const onRestart = (informer: string) => () => metrics.informerRestarts.inc({ informer });
  const checkpoints = new ResilientInformer<CheckpointObject>({
    kubeConfig: kc, path: ckPath, clock, logger, name: PLURAL, onRestart: onRestart(PLURAL),
    list: async () => (ns
      ? await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: ns })
      : await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as KubernetesListObject<CheckpointObject>,
  });
  const pods = new ResilientInformer<V1Pod>({
    kubeConfig: kc, path: podPath, clock, logger, name: 'pods', onRestart: onRestart('pods'),
    list: async () => (ns ? await core.listNamespacedPod({ namespace: ns }) : await core.listPodForAllNamespaces()),
  });
  const recorder = new EventRecorder({ sink: kubeEventSink(kc), clock, logger, component: 'lockmig-controller', instance: identity });
  const nodeExists = async (name: string): Promise<boolean> => {
    try {
      await core.readNode({ name });
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  };
  const controller = new Controller({
    checkpoints, pods, api: kubeCheckpointApi(kc), recorder, clock, logger, metrics, nodeExists,
    config: { ...DEFAULT_CONFIG, ...opts.config }, ...(opts.workers ? { workers: opts.workers } : {}),
  });

  const servers: RunningServer[] = [];
  const ready = {
    informers: () => (controller.synced ? true : `caches not synced${checkpoints.error ? ` (${checkpoints.error})` : ''}${pods.error ? ` (${pods.error})` : ''}`),
  };
  let metricsServer: RunningServer | undefined;
  let healthServer: RunningServer | undefined;
  if (opts.metricsAddr) servers.push((metricsServer = await startServer({ addr: opts.metricsAddr, registry })));
  if (opts.healthAddr) servers.push((healthServer = await startServer({ addr: opts.healthAddr, health: { ping: () => true }, ready })));
  opts.onListening?.({ ...(metricsServer ? { metrics: metricsServer } : {}), ...(healthServer ? { health: healthServer } : {}) });

  await controller.startInformers();
  logger.info('controller started', { controller: 'lockcheckpoint', identity, namespace: ns ?? '(all)', leaderElect: !!opts.leaderElect });

  let elector: LeaderElector | undefined;
  let work: Promise<void>;
  if (opts.leaderElect) {
    // the Lease lives where the controller runs (the chart grants leases there), not in the watched namespace
    const leaseNs = opts.leaseNamespace ?? ownNamespace() ?? ns ?? 'default';
    const runs: Promise<void>[] = [];
    elector = new LeaderElector({
      store: kubeLeaseStore(kc, leaseNs, opts.leaseName ?? 'lockmig-controller', { create: opts.leaseCreate !== false }),
      identity, clock, logger,
      ...(opts.leaseDurationMs ? { leaseDurationMs: opts.leaseDurationMs } : {}),
      ...(opts.renewDeadlineMs ? { renewDeadlineMs: opts.renewDeadlineMs } : {}),
      ...(opts.retryPeriodMs ? { retryPeriodMs: opts.retryPeriodMs } : {}),
      onStartedLeading: (lead) => {
        metrics.isLeader.set(1);
        runs.push(controller.run(AbortSignal.any([lead, signal])));
      },
      onStoppedLeading: () => metrics.isLeader.set(0),
      drain: () => Promise.all(runs),
      onNewLeader: (id) => logger.info('leader is', { controller: 'lockcheckpoint', leader: id, self: id === identity }),
    });
    work = elector.run(signal).then(() => Promise.all(runs)).then(() => undefined);
  } else {
    metrics.isLeader.set(1);
    work = controller.run(signal);
  }
  const done = work.finally(async () => {
    await controller.stopInformers();
    await Promise.all(servers.map((s) => s.close()));
    logger.info('controller stopped', { controller: 'lockcheckpoint', identity });
  });
  return { controller, ...(elector ? { elector } : {}), registry, identity, done };
}
