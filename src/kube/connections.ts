/**
 * Reused connections to the API server.
 *
 * @kubernetes/client-node 1.x builds a new `https.Agent` for EVERY request
 * (`KubeConfig.applySecurityAuthentication` and `applyToHTTPSOptions` call its private
 * `createAgent`), so every API call opens a new TCP connection, does a full TLS handshake (no
 * session resumption either: the session cache lives in the agent) and builds a new TLS context
 * from the CA. Measured with bench/scale.ts (500 LockCheckpoints at once): the controller's and the
 * agent's CPU went to handshakes, the API server's too, and the controller's RSS grew with the
 * short-lived TLS contexts.
 *
 * `shareConnections(kc)` makes that KubeConfig hand out one keep-alive agent per distinct TLS
 * identity (server, CA, client certificate): requests reuse open connections. Credentials that
 * travel in headers (bearer tokens, rotated ServiceAccount tokens) are applied per request as
 * before; a rotated client certificate gets a new agent. Proxied clusters are left as they are.
 */
import http from 'node:http';
import https from 'node:https';
import { createHash } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';

interface ClusterView { readonly server?: string; readonly proxyUrl?: string; readonly skipTLSVerify?: boolean }
type CreateAgent = (cluster: ClusterView | null, options: https.AgentOptions) => http.Agent;

const SHARED = Symbol.for('lockmig.sharedConnections');
/** Distinct TLS identities kept per KubeConfig (a rotating client certificate makes new ones). */
const MAX_AGENTS = 4;

function identity(cluster: ClusterView | null, o: https.AgentOptions): string {
  const h = createHash('sha256');
  for (const v of [cluster?.server, o.ca, o.cert, o.key, o.pfx, o.passphrase, o.rejectUnauthorized, o.servername]) {
    const parts = Array.isArray(v) ? v : [v];
    for (const p of parts) h.update(p === undefined ? '\0u' : typeof p === 'object' && !Buffer.isBuffer(p) ? JSON.stringify(p) : String(p)).update('\0');
  }
  return h.digest('hex');
}

/**
 * Makes `kc` reuse connections (see above). Returns `kc`. Idempotent. `maxSockets` bounds the
 * connections per TLS identity (default: no bound; a watch holds one for as long as it runs). Throws when the installed
 * client-node no longer has the hook, so an upgrade that changes it is noticed (the unit test
 * checks that connections are reused).
 */
export function shareConnections(kc: KubeConfig, o: { readonly maxSockets?: number } = {}): KubeConfig {
  const target = kc as unknown as { createAgent?: CreateAgent; [SHARED]?: Map<string, http.Agent> };
  if (target[SHARED]) return kc;
  const original = target.createAgent;
  if (typeof original !== 'function') throw new Error('shareConnections: @kubernetes/client-node has no KubeConfig.createAgent any more; see src/kube/connections.ts');
  const agents = new Map<string, http.Agent>();
  target[SHARED] = agents;
  target.createAgent = function createSharedAgent(this: unknown, cluster, options) {
    if (cluster?.proxyUrl) return original.call(this, cluster, options);
    const key = identity(cluster, options);
    let agent = agents.get(key);
    if (agent) return agent;
    if (cluster?.server?.startsWith('http:')) {
      original.call(this, cluster, options); // client-node's own check: plain http only with skipTLSVerify (it throws otherwise)
      agent = new http.Agent({ keepAlive: true, ...(o.maxSockets ? { maxSockets: o.maxSockets } : {}) });
    } else {
      agent = new https.Agent({ ...options, keepAlive: true, ...(o.maxSockets ? { maxSockets: o.maxSockets } : {}) });
    }
    agents.set(key, agent);
    if (agents.size > MAX_AGENTS) {
      const [oldestKey, oldest] = agents.entries().next().value as [string, http.Agent];
      agents.delete(oldestKey);
      // requests still on it finish; its idle connections are closed
      setTimeout(() => oldest.destroy(), 60_000).unref();
    }
    return agent;
  };
  return kc;
}
