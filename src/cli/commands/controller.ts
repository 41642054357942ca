/**
 * `lockmig controller`: the LockCheckpoint controller (one Deployment, usually 2 replicas with
 * --leader-elect). Loads the kubeconfig the standard way (in-cluster service account, or
 * $KUBECONFIG / ~/.kube/config), or --kubeconfig PATH.
 */
import { parse } from '../args.js';
import { CliError, EXIT } from '../args.js';
import { createLogger } from '../../log/logger.js';
import { parseAddr } from '../../kube/server.js';

export const summary = 'run the LockCheckpoint controller (dispatches agents, tracks status, finalizers, TTL)';

const USAGE = `usage: lockmig controller [options]

Watches LockCheckpoints and their source pods, dispatches the agent on the pod's node, tracks
progress, times out, deletes expired checkpoints, and records Events.

options:
  --metrics-addr ADDR      serve /metrics here (default :8080; "0" disables)
  --health-addr ADDR       serve /healthz and /readyz here (default :8081; "0" disables)
  --leader-elect           elect a leader through a coordination.k8s.io Lease (run >1 replica)
  --lease-namespace NS     namespace of the Lease (default: the pod's own namespace, else --namespace)
  --lease-name NAME        name of the Lease (default lockmig-controller)
  --lease-create BOOL      create the Lease when it is missing (default true; the Helm chart creates
                           it and passes false, so an uninstall leaves no Lease behind)
  --namespace NS           watch only this namespace (default: all namespaces)
  --kubeconfig PATH        kubeconfig file (default: in-cluster, then $KUBECONFIG, ~/.kube/config)
  --workers N              concurrent reconciles (default 2; one at a time per object)
  --agent-timeout S        seconds the agent has to answer a dispatch (default 60)
  --dump-timeout S         seconds a dump may go without agent progress (default 300)
  --pod-wait-timeout S     seconds to wait for a missing/unscheduled/not running pod, or for the node a kubelet
                           checkpoint source names (default 120)

environment: LOCKMIG_LOG_LEVEL (error|warn|info|debug), POD_NAMESPACE, POD_NAME`;

function seconds(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new CliError(`${flag} must be a positive number of seconds, got "${String(v)}"`);
  return n * 1000;
}

function addr(v: unknown, def: string, flag: string): string | undefined {
  const a = v === undefined ? def : String(v);
  if (a === '0' || a === '') return undefined;
  try {
    parseAddr(a);
  } catch (err) {
    throw new CliError(`${flag}: ${(err as Error).message}`);
  }
  return a;
}

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    'metrics-addr': { type: 'string' },
    'health-addr': { type: 'string' },
    'leader-elect': { type: 'boolean' },
    'lease-namespace': { type: 'string' },
    'lease-name': { type: 'string' },
    'lease-create': { type: 'string' },
    namespace: { type: 'string' },
    kubeconfig: { type: 'string' },
    workers: { type: 'string' },
    'agent-timeout': { type: 'string' },
    'dump-timeout': { type: 'string' },
    'pod-wait-timeout': { type: 'string' },
  }, USAGE);
  if (!p) return EXIT.OK;
  if (p.positionals.length) throw new CliError(`unexpected argument "${p.positionals[0]}"\n${USAGE}`);
  const v = p.values;
  const workers = v.workers === undefined ? undefined : Number(v.workers);
  if (workers !== undefined && (!Number.isInteger(workers) || workers < 1 || workers > 64)) throw new CliError(`--workers must be an integer 1..64, got "${String(v.workers)}"`);
  const metricsAddr = addr(v['metrics-addr'], ':8080', '--metrics-addr');
  const healthAddr = addr(v['health-addr'], ':8081', '--health-addr');
  const config = {
    ...(seconds(v['agent-timeout'], '--agent-timeout') !== undefined ? { agentAcceptTimeoutMs: seconds(v['agent-timeout'], '--agent-timeout') as number } : {}),
    ...(seconds(v['dump-timeout'], '--dump-timeout') !== undefined ? { dumpTimeoutMs: seconds(v['dump-timeout'], '--dump-timeout') as number } : {}),
    ...(seconds(v['pod-wait-timeout'], '--pod-wait-timeout') !== undefined ? { podWaitTimeoutMs: seconds(v['pod-wait-timeout'], '--pod-wait-timeout') as number } : {}),
  };

  // the Kubernetes client is loaded only now, so usage errors and --help answer fast
  const { KubeConfig } = await import('@kubernetes/client-node');
  const { startController } = await import('../../controller/main.js');
  const { shareConnections } = await import('../../kube/connections.js');
  const kc = new KubeConfig();
  try {
    if (typeof v.kubeconfig === 'string') kc.loadFromFile(v.kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    throw new CliError(`cannot load kubeconfig: ${(err as Error).message}`, EXIT.FAILURE);
  }
  if (!kc.getCurrentCluster()) throw new CliError('no cluster in the kubeconfig (not in a pod, and no $KUBECONFIG or ~/.kube/config)', EXIT.FAILURE);
  shareConnections(kc); // one keep-alive connection pool instead of a TLS handshake per request

  const logger = createLogger('controller');
  const ac = new AbortController();
  const stop = (sig: string) => {
    if (ac.signal.aborted) return;
    logger.info('shutting down', { controller: 'lockcheckpoint', signal: sig });
    ac.abort();
  };
  const lc = v['lease-create'];
  if (lc !== undefined && lc !== 'true' && lc !== 'false') throw new CliError(`--lease-create must be true or false, got ${JSON.stringify(lc)}`);
  const leaseCreate = lc === undefined ? undefined : lc === 'true';
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  const running = await startController({
    kubeConfig: kc, logger,
    ...(typeof v.namespace === 'string' ? { namespace: v.namespace } : {}),
    ...(metricsAddr ? { metricsAddr } : {}),
    ...(healthAddr ? { healthAddr } : {}),
    leaderElect: v['leader-elect'] === true,
    ...(typeof v['lease-namespace'] === 'string' ? { leaseNamespace: v['lease-namespace'] } : {}),
    ...(typeof v['lease-name'] === 'string' ? { leaseName: v['lease-name'] } : {}),
    ...(leaseCreate !== undefined ? { leaseCreate } : {}),
    ...(workers ? { workers } : {}),
    config,
  }, ac.signal);
  await running.done;
  return EXIT.OK;
}
