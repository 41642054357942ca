/**
 * `lockmig cleanup`: delete every LockCheckpoint while the controller and the agents still run,
 * so each one goes through the finalizer protocol (the agent deletes its images on its node).
 * The Helm chart runs it as a pre-delete hook: `helm uninstall` then leaves no checkpoint stuck
 * on its finalizer and no images on the nodes. Checkpoints still there after --timeout (a node
 * that is gone, an agent that does not answer) lose the finalizer so the uninstall finishes;
 * each one is logged with the node and path where images may remain.
 */
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { CliError, EXIT, parse } from '../args.js';
import { createLogger } from '../../log/logger.js';
import { FINALIZER_IMAGES, GROUP, PLURAL, VERSION } from '../../api/index.js';

export const summary = 'delete every LockCheckpoint through the finalizer protocol (the chart\'s pre-delete hook)';

const USAGE = `usage: lockmig cleanup [--namespace NS] [--timeout S] [--kubeconfig PATH]

Deletes every LockCheckpoint (in NS, or in all namespaces) and waits until they are gone: the
agents delete their images first (finalizer lockmig.dev/images). After --timeout seconds
(default 60) the remaining ones lose the finalizer and are listed with the node and path where
images may remain (a warning each). Exit 0 either way, so an uninstall is never blocked by a node
that is gone; 1 only when the API refuses the requests themselves.`;

interface Item {
  metadata?: { name?: string; namespace?: string; finalizers?: string[]; resourceVersion?: string };
  status?: { nodeName?: string; imageLocation?: string };
}

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, { namespace: { type: 'string' }, timeout: { type: 'string' }, kubeconfig: { type: 'string' } }, USAGE);
  if (!p) return EXIT.OK;
  const v = p.values as Record<string, string | undefined>;
  const timeoutS = v.timeout === undefined ? 60 : Number(v.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS < 0) throw new CliError(`--timeout must be a number of seconds >= 0, got ${JSON.stringify(v.timeout)}`);
  const log = createLogger('cleanup');
  const kc = new KubeConfig();
  if (v.kubeconfig) kc.loadFromFile(v.kubeconfig);
  else kc.loadFromDefault();
  const api = kc.makeApiClient(CustomObjectsApi);
  const ns = v.namespace;
  const list = async (): Promise<Item[]> => {
    const r = (ns
      ? await api.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL })
      : await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as { items?: Item[] };
    return r.items ?? [];
  };
  const id = (i: Item) => `${i.metadata?.namespace}/${i.metadata?.name}`;

  let items = await list();
  log.info('deleting LockCheckpoints', { count: items.length, namespace: ns ?? '(all)' });
  for (const i of items) {
    try {
      await api.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: i.metadata!.namespace!, plural: PLURAL, name: i.metadata!.name! });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
  }
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    items = await list();
    if (items.length === 0) {
      log.info('every LockCheckpoint is gone');
      return EXIT.OK;
    }
    if (Date.now() >= deadline) break;
    log.info('waiting for the agents to delete images', { left: items.length, secondsLeft: Math.ceil((deadline - Date.now()) / 1000), checkpoints: items.slice(0, 10).map(id) });
    await new Promise((r) => setTimeout(r, Math.min(2000, Math.max(100, deadline - Date.now()))));
  }
  for (const i of items) {
    const finalizers = (i.metadata?.finalizers ?? []).filter((f) => f !== FINALIZER_IMAGES);
    log.warn('removing the images finalizer of a checkpoint whose agent did not confirm; images may remain', {
      checkpoint: id(i), node: i.status?.nodeName ?? '(never dispatched)', imageLocation: i.status?.imageLocation ?? '(unknown)',
    });
    try {
      await api.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace: i.metadata!.namespace!, plural: PLURAL, name: i.metadata!.name!, body: { metadata: { finalizers, resourceVersion: i.metadata?.resourceVersion } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    } catch (err) {
      if ((err as { code?: number }).code !== 404) log.error('could not remove the finalizer', { checkpoint: id(i), error: (err as Error).message });
    }
  }
  return EXIT.OK;
}
