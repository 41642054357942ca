/**
 * Kubeconfig files for a test API server: one per identity, readable by client-node, kubectl, helm
 * and the lockmig CLI (`--kubeconfig` / `KUBECONFIG`). Written as JSON, which every kubeconfig
 * loader accepts (it is YAML).
 */
import fs from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';

export interface Endpoint {
  /** https://127.0.0.1:PORT */
  readonly url: string;
  /** PEM of the CA that signed the serving certificate (undefined: the cluster entry says insecure-skip-tls-verify). */
  readonly caPem: string | undefined;
}

/** The endpoint of a kubeconfig's current cluster (for writing kubeconfigs of other identities on any cluster). */
export function endpointOf(kc: KubeConfig): Endpoint {
  const c = kc.getCurrentCluster();
  if (!c) throw new Error('kubeconfig has no current cluster');
  const caPem = c.caData ? Buffer.from(c.caData, 'base64').toString('utf8') : c.caFile ? fs.readFileSync(c.caFile, 'utf8') : undefined;
  if (!caPem && !c.skipTLSVerify && c.server.startsWith('https:')) throw new Error(`cluster ${c.name}: no CA data and TLS verification is on`);
  return { url: c.server, caPem };
}

export interface KubeconfigOptions {
  readonly token: string;
  /** Shown as the user/context name (`kubectl config view`). */
  readonly user: string;
  /** Namespace of the context (default `default`). */
  readonly namespace?: string;
}

export function kubeconfigObject(ep: Endpoint, o: KubeconfigOptions): Record<string, unknown> {
  return {
    apiVersion: 'v1', kind: 'Config', preferences: {},
    clusters: [{ name: 'envtest', cluster: ep.caPem ? { server: ep.url, 'certificate-authority-data': Buffer.from(ep.caPem).toString('base64') } : { server: ep.url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: o.user, user: { token: o.token } }],
    contexts: [{ name: `${o.user}@envtest`, context: { cluster: 'envtest', user: o.user, namespace: o.namespace ?? 'default' } }],
    'current-context': `${o.user}@envtest`,
  };
}

/** Writes the kubeconfig (mode 0600) and returns it loaded into a client-node KubeConfig. */
export function writeKubeconfig(file: string, ep: Endpoint, o: KubeconfigOptions): KubeConfig {
  fs.writeFileSync(file, `${JSON.stringify(kubeconfigObject(ep, o), null, 2)}\n`, { mode: 0o600 });
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
}
