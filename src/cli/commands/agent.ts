/**
 * `lockmig agent`: the node agent (DaemonSet, privileged, hostPID). Thin entrypoint: parses flags,
 * installs the shim runtime, starts the handover vault, the Agent (src/agent/agent.ts) and the
 * health/metrics servers.
 */
import path from 'node:path';
import fs from 'node:fs';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { collectDefaultMetrics } from 'prom-client';
import { CliError, EXIT, parse } from '../args.js';
import { createLogger } from '../../log/logger.js';
import { DEFAULT_KUBELET_CHECKPOINT_DIR, DEFAULT_STORAGE_ROOT } from '../../api/index.js';
import { AGENT_WORKERS, Agent } from '../../agent/agent.js';
import { LiveLockService } from '../../agent/live-locks.js';
import { installShim } from '../../agent/shim.js';
import { dumpProcesses } from '../../engine/dump.js';
import { writeDump } from '../../engine/write.js';
import { Vault } from '../../handover/index.js';
import { startServer, type RunningServer } from '../../kube/server.js';
import { EventRecorder, kubeEventSink } from '../../kube/events.js';
import { realClock } from '../../kube/clock.js';
import { shareConnections } from '../../kube/connections.js';

export const summary = 'node agent: dumps the locks of pods assigned to this node, runs the handover vault';

const USAGE = `usage: lockmig agent [options]

Watches LockCheckpoints labelled lockmig.dev/node=<node>, finds the source pod's processes by
cgroup, writes one lock image per container under <storage-root>/<namespace>/<path>/<container>/,
reports to status.agent, deletes images of deleted checkpoints, and (restore mode Auto/Handover)
holds the OFD/flock descriptions in the handover vault for the restore pod. A checkpoint whose
source is a kubelet checkpoint archive (spec.source.kubeletCheckpoint) is imported from
--kubelet-checkpoint-dir instead (read only, nothing extracted).

options:
  --node NAME            this node's name (default $NODE_NAME)
  --storage-root DIR     node-local image root (default ${DEFAULT_STORAGE_ROOT})
  --vault-socket PATH    handover vault socket (default /run/lockmig/vault.sock; "none" disables handover)
  --shim-dir DIR         install the restore-shim bundle under DIR (DIR/current; default /var/lib/lockmig/shim; "none" skips)
  --shim-source DIR      prebuilt bundle to install (default $LOCKMIG_SHIM_BUNDLE, else <app>/shim, else one built from this installation)
  --metrics-addr ADDR    Prometheus /metrics (default :8080; "0" disables)
  --health-addr ADDR     /healthz, /readyz and /locks (the live locks of this node's pods, JSON; what
                         \`kubectl lockmig locks\` reads through the API server's pod proxy) (default :8081)
  --no-locks-endpoint    do not serve /locks nor the per-pod lock gauges
  --kubelet-checkpoint-dir DIR
                         where this node's kubelet writes checkpoint archives (default ${DEFAULT_KUBELET_CHECKPOINT_DIR})
  --proc-root DIR        where to look for the pod's processes by cgroup (default /proc; the agent needs
                         hostPID: the dump itself always reads the pids' /proc entries)
  --kubeconfig PATH      kubeconfig (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
  --workers N            checkpoints handled at once (default ${AGENT_WORKERS}; the dumps themselves run one at a time)
env: NODE_NAME, LOCKMIG_LOG_LEVEL, LOCKMIG_SHIM_BUNDLE`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    node: { type: 'string' },
    'storage-root': { type: 'string' },
    'vault-socket': { type: 'string' },
    'shim-dir': { type: 'string' },
    'shim-source': { type: 'string' },
    'metrics-addr': { type: 'string' },
    'health-addr': { type: 'string' },
    'proc-root': { type: 'string' },
    'kubelet-checkpoint-dir': { type: 'string' },
    kubeconfig: { type: 'string' },
    workers: { type: 'string' },
    'no-locks-endpoint': { type: 'boolean' },
  }, USAGE);
  if (!p) return EXIT.OK;
  const v = p.values as Record<string, string | undefined>;
  const locksEndpoint = !(p.values as Record<string, unknown>)['no-locks-endpoint'];
  const node = v.node ?? process.env.NODE_NAME;
  if (!node) throw new CliError('the node name is required: --node NAME or $NODE_NAME (downward API spec.nodeName)');
  const storageRoot = v['storage-root'] ?? DEFAULT_STORAGE_ROOT;
  const procRoot = v['proc-root'] ?? '/proc';
  const vaultSocket = v['vault-socket'] ?? '/run/lockmig/vault.sock';
  const shimDir = v['shim-dir'] ?? '/var/lib/lockmig/shim';
  const kubeletCheckpointDir = v['kubelet-checkpoint-dir'] ?? DEFAULT_KUBELET_CHECKPOINT_DIR;
  if (!path.isAbsolute(kubeletCheckpointDir)) throw new CliError(`--kubelet-checkpoint-dir must be an absolute path, got "${kubeletCheckpointDir}"`);
  for (const [flag, val] of [['--storage-root', storageRoot], ['--proc-root', procRoot], ['--vault-socket', vaultSocket], ['--shim-dir', shimDir]] as const) {
    if (val !== 'none' && !path.isAbsolute(val)) throw new CliError(`${flag} must be an absolute path, got "${val}"`);
  }
  const workers = v.workers === undefined ? AGENT_WORKERS : Number(v.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new CliError(`--workers must be an integer 1..64, got "${String(v.workers)}"`);
  if (!fs.existsSync(path.join(procRoot, '1'))) throw new CliError(`${procRoot} shows no process 1: is it a proc filesystem?`);

  const logger = createLogger('agent').child({ node });
  const kc = new KubeConfig();
  if (v.kubeconfig) kc.loadFromFile(v.kubeconfig);
  else kc.loadFromDefault();
  shareConnections(kc); // one keep-alive connection pool instead of a TLS handshake per request
  fs.mkdirSync(storageRoot, { recursive: true, mode: 0o700 });

  let shimReady = shimDir === 'none';
  if (shimDir !== 'none') {
    const source = v['shim-source'];
    const r = installShim(shimDir, { ...(source ? { source } : {}), logger });
    logger.info('shim runtime ready', { dir: r.dir, built: r.built, changed: r.changed });
    shimReady = true;
  }

  const events = new EventRecorder({ sink: kubeEventSink(kc), clock: realClock, logger, component: 'lockmig-agent', instance: node });
  let vault: Vault | undefined;
  const lostDetails = new Map<string, string>();
  if (vaultSocket !== 'none') {
    vault = new Vault({ socketPath: vaultSocket, logger: logger.child({ vault: vaultSocket }), stateFile: path.join(path.dirname(vaultSocket), 'vault-state.json') });
    // What the previous vault held when this agent started: the agent decides per checkpoint whether
    // the source still runs (it takes the descriptions again: Normal HandoverResumed) or the loss is
    // real (Warning HandoverLost, with these details).
    vault.on('lost', (e) => {
      for (const c of e.checkpoints) {
        const m = /^([^/]+)\/(.+)\.([^.]+)$/.exec(c.name);
        if (!m) continue;
        const key = `${m[1]!}/${m[2]!}`;
        const note = `${c.files} description(s) of container "${m[3]}" held since ${c.since}`;
        lostDetails.set(key, lostDetails.has(key) ? `${lostDetails.get(key)}, ${note}` : note);
        logger.warn('the previous vault held descriptions that are gone', { namespace: m[1], name: m[2], container: m[3], files: c.files, since: c.since });
      }
    });
    vault.start();
  }

  const agent = new Agent({
    kc, node, storageRoot, procRoot, logger, events, kubeletCheckpointDir,
    dump: dumpProcesses, write: writeDump, now: () => new Date(),
    ...(vault ? { vault } : {}),
    vaultLostDetail: (key) => lostDetails.get(key),
    workers,
  });
  collectDefaultMetrics({ register: agent.metrics.registry, prefix: 'lockmig_agent_' });
  // live locks of this node's pods: GET /locks and the per-pod lock gauges (src/agent/live-locks.ts)
  const core = kc.makeApiClient(CoreV1Api);
  const live = locksEndpoint ? new LiveLockService({
    node, procRoot, registry: agent.metrics.registry,
    listPods: async () => (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` })).items,
  }) : undefined;
  const routes = live ? { '/locks': (url: URL) => live.handle(url) } : undefined;
  const servers: RunningServer[] = [];
  const healthAddr = v['health-addr'] ?? ':8081';
  const metricsAddr = v['metrics-addr'] ?? ':8080';
  servers.push(await startServer({
    addr: healthAddr,
    health: { process: () => true },
    ready: { informer: () => agent.isSynced() || 'LockCheckpoints not listed yet', shim: () => shimReady || 'shim runtime not installed' },
    ...(metricsAddr === healthAddr ? { registry: agent.metrics.registry } : {}),
    ...(routes ? { routes } : {}),
  }));
  if (metricsAddr !== '0' && metricsAddr !== healthAddr) servers.push(await startServer({ addr: metricsAddr, registry: agent.metrics.registry }));
  await agent.start();
  logger.info('agent running', { storageRoot, vaultSocket, shimDir, health: healthAddr, metrics: metricsAddr });

  await new Promise<void>((resolve) => {
    const stop = (sig: string) => { logger.info('stopping', { signal: sig }); resolve(); };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await agent.stop();
  await vault?.close();
  for (const s of servers) await s.close();
  return EXIT.OK;
}
