/**
 * `lockmig webhook`: the restore pods' mutating admission webhook (HTTPS).
 * Thin entrypoint: parses flags, builds the Kubernetes client, starts src/webhook/server.ts.
 */
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { CliError, EXIT, parse } from '../args.js';
import { createLogger } from '../../log/logger.js';
import { DEFAULT_STORAGE_ROOT } from '../../api/index.js';
import { CheckpointCache, kubeCheckpointStore } from '../../webhook/checkpoints.js';
import { EventRecorder, kubeEventSink } from '../../kube/events.js';
import { realClock } from '../../kube/clock.js';
import { DEFAULT_WEBHOOK_CONFIG } from '../../webhook/mutate.js';
import { startWebhookServer } from '../../webhook/server.js';
import { shareConnections } from '../../kube/connections.js';

export const summary = 'mutating admission webhook that wraps restore pods with the restore shim';

const USAGE = `usage: lockmig webhook [options]

Serves AdmissionReview v1 over HTTPS (and GET /healthz, /readyz):
  POST /mutate-pods  pods CREATE: a pod annotated lockmig.dev/restore-from: <checkpoint>, or picked
                     by a checkpoint's spec.target.policy, gets the images, the shim runtime and (for
                     handover) the vault socket mounted, and each target container starts through
                     \`lockmig restore\`. Register with failurePolicy: Fail (src/webhook/server.ts).
  POST /stop-pods    pods DELETE and pods/eviction CREATE: a pod labelled lockmig.dev/migrate
                     (always | on-eviction, or its namespace) is checkpointed before it stops; always
                     allowed. Register with failurePolicy: Ignore (src/webhook/stop.ts).

options:
  --addr [HOST]:PORT          listen address (default :9443)
  --tls-cert FILE             PEM certificate (reloaded when the file changes)
  --tls-key FILE              PEM private key
  --plain-http                serve plain HTTP instead (local testing only; the API server requires HTTPS)
  --shim-dir DIR              host directory of the agent's shim runtime (default ${DEFAULT_WEBHOOK_CONFIG.shimDir})
  --vault-socket-dir DIR      host directory of the agent's vault socket (default ${DEFAULT_WEBHOOK_CONFIG.vaultSocketDir})
  --storage-root DIR          agent's node-local storage root (default ${DEFAULT_STORAGE_ROOT})
  --stop-wait S               how long a stop request waits for its checkpoint (default 10)
  --kubeconfig PATH           kubeconfig (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
env: LOCKMIG_LOG_LEVEL`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    addr: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'plain-http': { type: 'boolean' },
    'shim-dir': { type: 'string' },
    'vault-socket-dir': { type: 'string' },
    'storage-root': { type: 'string' },
    'stop-wait': { type: 'string' },
    kubeconfig: { type: 'string' },
  }, USAGE);
  if (!p) return EXIT.OK;
  const v = p.values;
  const cert = v['tls-cert'] as string | undefined;
  const key = v['tls-key'] as string | undefined;
  if ((cert === undefined) !== (key === undefined)) throw new CliError('--tls-cert and --tls-key go together');
  if (!cert && !v['plain-http']) throw new CliError('the API server only calls webhooks over HTTPS: give --tls-cert and --tls-key (or --plain-http for local testing)');
  for (const [flag, val] of [['--shim-dir', v['shim-dir']], ['--vault-socket-dir', v['vault-socket-dir']], ['--storage-root', v['storage-root']]] as const) {
    if (val !== undefined && !String(val).startsWith('/')) throw new CliError(`${flag} must be an absolute path, got "${String(val)}"`);
  }
  const logger = createLogger('webhook');
  const kc = new KubeConfig();
  if (v.kubeconfig) kc.loadFromFile(v.kubeconfig as string);
  else kc.loadFromDefault();
  shareConnections(kc); // one keep-alive connection pool instead of a TLS handshake per admission's API calls
  const config = {
    ...DEFAULT_WEBHOOK_CONFIG,
    ...(v['shim-dir'] ? { shimDir: v['shim-dir'] as string } : {}),
    ...(v['vault-socket-dir'] ? { vaultSocketDir: v['vault-socket-dir'] as string } : {}),
    ...(v['storage-root'] ? { storageRoot: v['storage-root'] as string } : {}),
  };
  const stopWait = v['stop-wait'] === undefined ? 10 : Number(v['stop-wait']);
  if (!Number.isFinite(stopWait) || stopWait < 0 || stopWait > 28) throw new CliError(`--stop-wait must be 0-28 seconds (under the API server's 30 s webhook limit), got ${JSON.stringify(v['stop-wait'])}`);
  const cache = new CheckpointCache(kc, { clock: realClock, logger });
  await cache.start();
  const core = kc.makeApiClient(CoreV1Api);
  const nsLabels = new Map<string, { at: number; labels: Record<string, string> }>();
  const server = await startWebhookServer({
    addr: (v.addr as string | undefined) ?? ':9443',
    ...(cert && key ? { tls: { certFile: cert, keyFile: key } } : {}),
    store: kubeCheckpointStore(kc, 'lockmig-webhook', cache),
    config,
    logger,
    stopWaitMs: stopWait * 1000,
    ready: () => cache.synced,
    events: new EventRecorder({ sink: kubeEventSink(kc), clock: realClock, logger, component: 'lockmig-webhook', ...(process.env.POD_NAME ? { instance: process.env.POD_NAME } : {}) }),
    pods: {
      async get(namespace, name): Promise<V1Pod | undefined> {
        try { return await core.readNamespacedPod({ namespace, name }); } catch (err) { if ((err as { code?: number }).code === 404) return undefined; throw err; }
      },
      async namespaceLabels(namespace) {
        const hit = nsLabels.get(namespace);
        if (hit && Date.now() - hit.at < 30_000) return hit.labels;
        const labels = (await core.readNamespace({ name: namespace })).metadata?.labels ?? {};
        nsLabels.set(namespace, { at: Date.now(), labels });
        return labels;
      },
    },
  });
  logger.info('webhook serving', { url: server.url, shimDir: config.shimDir, vaultSocketDir: config.vaultSocketDir, storageRoot: config.storageRoot });
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => { logger.info('stopping', { signal: sig }); resolve(); };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  // graceful: out of the Service first, then finish what is in flight (a stop request waits for its
  // checkpoint); the chart's terminationGracePeriodSeconds leaves room for both
  await server.close({ drainMs: 5000, graceMs: stopWait * 1000 + 2000 });
  await cache.stop();
  return EXIT.OK;
}
