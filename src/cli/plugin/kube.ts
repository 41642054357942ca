/**
 * The plugin's link to the cluster: the caller's kubeconfig (kubectl's --kubeconfig/--context
 * rules), RBAC checks with SelfSubjectAccessReview, the agents found by label, and the agents'
 * /locks read through the API server's pod proxy — always with the caller's own credentials.
 */
import http from 'node:http';
import https from 'node:https';
import {
  AuthorizationV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, type V1Pod,
} from '@kubernetes/client-node';
import type { NodeLocks } from '../../agent/live-locks.js';
import { CliError, EXIT } from '../args.js';

export const DEFAULT_AGENT_NAMESPACE = 'lockmig-system';
/** the chart's agent pods (charts/lockmig/templates/agent-daemonset.yaml) */
export const AGENT_SELECTOR = 'app.kubernetes.io/component=agent,app.kubernetes.io/part-of=lockmig';

export interface Cluster {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly authz: AuthorizationV1Api;
  /** the namespace of the current context (kubectl's default for -n) */
  readonly contextNamespace: string;
}

/** kubectl's rules: --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else in-cluster; --context picks a context. */
export function connect(o: { kubeconfig?: string; context?: string }): Cluster {
  const kc = new KubeConfig();
  try {
    if (o.kubeconfig) kc.loadFromFile(o.kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    throw new CliError(`cannot load the kubeconfig${o.kubeconfig ? ` ${o.kubeconfig}` : ''}: ${(err as Error).message}`, EXIT.FAILURE);
  }
  if (o.context) {
    if (!kc.getContextObject(o.context)) throw new CliError(`context "${o.context}" does not exist in the kubeconfig (contexts: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`, EXIT.FAILURE);
    kc.setCurrentContext(o.context);
  }
  if (!kc.getCurrentCluster()) throw new CliError('no cluster in the kubeconfig: set --kubeconfig or $KUBECONFIG', EXIT.FAILURE);
  return {
    kc, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi), authz: kc.makeApiClient(AuthorizationV1Api),
    contextNamespace: kc.getContextObject(kc.getCurrentContext())?.namespace || 'default',
  };
}

/** Status code of a client-node ApiException (or undefined). */
export function statusOf(err: unknown): number | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : undefined;
}

/** An API error as one line: the server's message when there is one. */
export function apiMessage(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  if (typeof body === 'string') {
    try { const m = (JSON.parse(body) as { message?: string }).message; if (m) return m; } catch { /* not JSON */ }
  } else if (body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') {
    return (body as { message: string }).message;
  }
  return (err as Error).message;
}

/** May the caller `verb` `resource` in `namespace` ('' = all namespaces)? One SelfSubjectAccessReview. */
export async function can(c: Cluster, verb: string, resource: string, namespace: string, subresource?: string): Promise<boolean> {
  const r = await c.authz.createSelfSubjectAccessReview({
    body: {
      apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: { verb, resource, group: '', ...(namespace ? { namespace } : {}), ...(subresource ? { subresource } : {}) } },
    },
  });
  return r.status?.allowed === true;
}

/**
 * Which namespaces' locks the caller may see: those where it may `list pods`. Cached per
 * namespace; `all` is true when it may list pods cluster-wide.
 */
export class PodReadAccess {
  private readonly cache = new Map<string, Promise<boolean>>();
  constructor(private readonly c: Cluster) {}
  may(namespace: string): Promise<boolean> {
    let p = this.cache.get(namespace);
    if (!p) { p = can(this.c, 'list', 'pods', namespace); this.cache.set(namespace, p); }
    return p;
  }
}

/** The agent pods (running ones), by node. */
export async function findAgents(c: Cluster, agentNamespace: string): Promise<Map<string, V1Pod>> {
  let pods: V1Pod[];
  try {
    pods = (await c.core.listNamespacedPod({ namespace: agentNamespace, labelSelector: AGENT_SELECTOR })).items;
  } catch (err) {
    if (statusOf(err) === 403) {
      throw new CliError(`you may not list the lockmig agents' pods in namespace ${agentNamespace}: ${apiMessage(err)}\n`
        + `Reading live locks needs "list pods" there and "get pods/proxy" on the agent pods (the ClusterRole lockmig-lock-viewer; docs/kubectl-plugin.md "RBAC").`, EXIT.FAILURE);
    }
    throw new CliError(`cannot list the lockmig agents in namespace ${agentNamespace}: ${apiMessage(err)}`, EXIT.FAILURE);
  }
  const out = new Map<string, V1Pod>();
  for (const p of pods) {
    const node = p.spec?.nodeName;
    if (!node || p.status?.phase !== 'Running' || p.metadata?.deletionTimestamp) continue;
    const prev = out.get(node);
    // two agents on one node during a rollout: the newer one
    if (!prev || String(p.metadata?.creationTimestamp ?? '') > String(prev.metadata?.creationTimestamp ?? '')) out.set(node, p);
  }
  return out;
}

/** The port of the agent's health server (container port "health"; the chart's default 8081). */
export function agentPort(agent: V1Pod): number {
  for (const ct of agent.spec?.containers ?? []) for (const p of ct.ports ?? []) if (p.name === 'health') return p.containerPort;
  return 8081;
}

/** How the plugin reads one agent's /locks. The default goes through the API server's pod proxy. */
export type AgentTransport = (agent: V1Pod, query: { namespace?: string; pod?: string }) => Promise<NodeLocks>;

/** GET /api/v1/namespaces/<ns>/pods/<agent>:<port>/proxy/locks?… with the caller's credentials. */
export function podProxyTransport(c: Cluster, timeoutMs = 15_000): AgentTransport {
  return async (agent, query) => {
    const server = c.kc.getCurrentCluster()!.server.replace(/\/+$/, '');
    const qs = new URLSearchParams();
    if (query.namespace) qs.set('namespace', query.namespace);
    if (query.pod) qs.set('pod', query.pod);
    const url = new URL(`${server}/api/v1/namespaces/${encodeURIComponent(agent.metadata!.namespace!)}/pods/${encodeURIComponent(`${agent.metadata!.name!}:${agentPort(agent)}`)}/proxy/locks${qs.size ? `?${qs}` : ''}`);
    const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
    await c.kc.applyToHTTPSOptions(opts);
    const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = (url.protocol === 'http:' ? http : https).request(url, { ...opts, timeout: timeoutMs }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    });
    if (body.status !== 200) {
      let msg = body.text.trim();
      try { msg = (JSON.parse(body.text) as { message?: string; error?: string }).message ?? (JSON.parse(body.text) as { error?: string }).error ?? msg; } catch { /* text */ }
      const hint = body.status === 403 ? ' (reading live locks needs "get pods/proxy" on the agent pods: the ClusterRole lockmig-lock-viewer, docs/kubectl-plugin.md "RBAC")' : '';
      throw Object.assign(new Error(`agent ${agent.metadata!.name} (node ${agent.spec?.nodeName}): HTTP ${body.status}: ${msg.slice(0, 300)}${hint}`), { code: body.status });
    }
    return JSON.parse(body.text) as NodeLocks;
  };
}
