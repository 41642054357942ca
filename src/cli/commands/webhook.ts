/**
 * `lockmig webhook`: the restore pods' mutating admission webhook (HTTPS).
 * Thin entrypoint: parses flags, builds the Kubernetes client, starts src/webhook/server.ts.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { CliError, EXIT, parse } from '../args.js';
import { createLogger } from '../../log/logger.js';
import { DEFAULT_STORAGE_ROOT } from '../../api/index.js';
import { kubeCheckpointStore } from '../../webhook/checkpoints.js';
import { DEFAULT_WEBHOOK_CONFIG } from '../../webhook/mutate.js';
import { startWebhookServer } from '../../webhook/server.js';

export const summary = 'mutating admission webhook that wraps restore pods with the restore shim';

const USAGE = `usage: lockmig webhook [options]

Serves AdmissionReview v1 on POST /mutate-pods (and GET /healthz, /readyz) over HTTPS.
Pods annotated lockmig.dev/restore-from: <checkpoint> get the checkpoint's images, the shim
runtime and (for handover) the vault socket mounted, and each target container starts through
\`lockmig restore\`. Register it with failurePolicy: Fail (see src/webhook/server.ts).

options:
  --addr [HOST]:PORT          listen address (default :9443)
  --tls-cert FILE             PEM certificate (reloaded when the file changes)
  --tls-key FILE              PEM private key
  --plain-http                serve plain HTTP instead (local testing only; the API server requires HTTPS)
  --shim-dir DIR              host directory of the agent's shim runtime (default ${DEFAULT_WEBHOOK_CONFIG.shimDir})
  --vault-socket-dir DIR      host directory of the agent's vault socket (default ${DEFAULT_WEBHOOK_CONFIG.vaultSocketDir})
  --storage-root DIR          agent's node-local storage root (default ${DEFAULT_STORAGE_ROOT})
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
  const config = {
    ...DEFAULT_WEBHOOK_CONFIG,
    ...(v['shim-dir'] ? { shimDir: v['shim-dir'] as string } : {}),
    ...(v['vault-socket-dir'] ? { vaultSocketDir: v['vault-socket-dir'] as string } : {}),
    ...(v['storage-root'] ? { storageRoot: v['storage-root'] as string } : {}),
  };
  const server = await startWebhookServer({
    addr: (v.addr as string | undefined) ?? ':9443',
    ...(cert && key ? { tls: { certFile: cert, keyFile: key } } : {}),
    store: kubeCheckpointStore(kc),
    config,
    logger,
  });
  logger.info('webhook serving', { url: server.url, shimDir: config.shimDir, vaultSocketDir: config.vaultSocketDir, storageRoot: config.storageRoot });
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => { logger.info('stopping', { signal: sig }); resolve(); };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await server.close();
  return EXIT.OK;
}
