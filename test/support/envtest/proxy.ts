/**
 * A fault-injecting HTTPS proxy in front of a real kube-apiserver, for the failures a network or a
 * load balancer causes between a component and its API server (the server behind it stays real):
 *  - `fail({ path, method, watch, times, status })`: the next matching request(s) get an HTTP error
 *    (a Kubernetes Status body, as an apiserver or an API gateway would send), or a reset connection;
 *  - `cutWatches()`: open watch streams end (`end`: cleanly, as on an idle timeout; `reset`: torn);
 *  - `requests`: every request with its status and, for watches, the ERROR events the real server
 *    sent in the stream (e.g. a real 410 Gone after an etcd compaction) and its BOOKMARKs.
 * It serves the apiserver's own certificate, so the same CA data validates it; clients point at it
 * with `kubeConfig`/`kubeconfigPath` (same user and token as the server's admin, or any token).
 */
import fs from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeApiServer } from './apiserver.js';
import { writeKubeconfig } from './kubeconfig.js';

export interface ProxiedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly watch: boolean;
  readonly at: number;
  /** HTTP status sent to the client (undefined until the head is sent). */
  status?: number;
  /** true when this proxy answered instead of the server. */
  injected?: boolean;
  /** Status codes of ERROR events the server sent in a watch stream. */
  readonly watchErrors: number[];
  /** resourceVersions of the BOOKMARK events the server sent in a watch stream. */
  readonly bookmarks: string[];
}

export interface FaultRule {
  readonly method?: string;
  /** Substring of, or RegExp tested against, the request path (without the query). */
  readonly path?: string | RegExp;
  /** Only watch requests (true) or only the others (false). */
  readonly watch?: boolean;
  /** How many matching requests fail (default 1; Infinity until cancel()). */
  readonly times?: number;
  /** HTTP status to answer (default 503), or `reset` to destroy the connection. */
  readonly status?: number | 'reset';
}

export interface FaultHandle {
  readonly remaining: number;
  cancel(): void;
}

export interface FaultProxy {
  readonly url: string;
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  readonly requests: ProxiedRequest[];
  fail(rule: FaultRule): FaultHandle;
  /** Ends every open watch stream; returns how many. */
  cutWatches(mode?: 'end' | 'reset'): number;
  activeWatches(): number;
  close(): Promise<void>;
}

const REASONS: Readonly<Record<number, string>> = { 429: 'TooManyRequests', 500: 'InternalError', 502: 'BadGateway', 503: 'ServiceUnavailable', 504: 'Timeout' };

function matches(rule: FaultRule & { left: number }, r: ProxiedRequest): boolean {
  if (rule.left <= 0) return false;
  if (rule.method && rule.method.toUpperCase() !== r.method) return false;
  if (rule.watch !== undefined && rule.watch !== r.watch) return false;
  if (typeof rule.path === 'string' && !r.path.includes(rule.path)) return false;
  if (rule.path instanceof RegExp && !rule.path.test(r.path)) return false;
  return true;
}

/** Scans newline-delimited watch events for ERROR (their codes) and BOOKMARK (their resourceVersions) events. */
function watchScanner(rec: ProxiedRequest): (chunk: Buffer) => void {
  let buf = '';
  return (chunk) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.includes('"ERROR"') && !line.includes('"BOOKMARK"')) continue;
      try {
        const ev = JSON.parse(line) as { type?: string; object?: { code?: number; metadata?: { resourceVersion?: string } } };
        if (ev.type === 'ERROR') rec.watchErrors.push(ev.object?.code ?? 0);
        if (ev.type === 'BOOKMARK') rec.bookmarks.push(ev.object?.metadata?.resourceVersion ?? '');
      } catch {
        // not a JSON line: ignore, the client will complain itself
      }
    }
  };
}

export async function startFaultProxy(api: KubeApiServer, o: { token?: string; user?: string } = {}): Promise<FaultProxy> {
  const upstream = new URL(api.url);
  const rules: (FaultRule & { left: number })[] = [];
  const requests: ProxiedRequest[] = [];
  const watches = new Set<{ res: ServerResponse; up: IncomingMessage }>();
  const sockets = new Set<Socket>();

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'https://proxy');
    const query = Object.fromEntries(u.searchParams);
    const rec: ProxiedRequest = { method: req.method ?? 'GET', path: u.pathname, query, watch: query.watch === 'true' || query.watch === '1', at: Date.now(), watchErrors: [], bookmarks: [] };
    requests.push(rec);
    const rule = rules.find((r) => matches(r, rec));
    if (rule) {
      rule.left--;
      rec.injected = true;
      if (rule.status === 'reset') {
        req.socket.destroy();
        return;
      }
      const code = rule.status ?? 503;
      rec.status = code;
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `injected by the test proxy: ${code}`, reason: REASONS[code] ?? 'InternalError', code }));
      req.resume();
      return;
    }
    const headers = { ...req.headers, host: upstream.host };
    const up = https.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, ca: api.caPem, agent: false }, (ures) => {
      rec.status = ures.statusCode;
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      // a watch on a quiet collection sends no body for a while: the client must get the head now
      res.flushHeaders();
      if (rec.watch) {
        const entry = { res, up: ures };
        watches.add(entry);
        const scan = watchScanner(rec);
        ures.on('data', scan);
        const done = () => watches.delete(entry);
        ures.on('close', done);
        res.on('close', () => {
          done();
          ures.destroy();
        });
      }
      ures.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) {
        rec.status = 502;
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'test proxy: upstream unreachable', reason: 'BadGateway', code: 502 }));
      } else {
        res.destroy();
      }
    });
    req.pipe(up);
  };

  const pki = path.join(api.dir, 'pki');
  const server = https.createServer({ cert: fs.readFileSync(path.join(pki, 'apiserver.crt')), key: fs.readFileSync(path.join(pki, 'apiserver.key')) }, handler);
  server.on('secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const kubeconfigPath = path.join(api.dir, `proxy-${(server.address() as AddressInfo).port}.kubeconfig`);
  const kubeConfig = writeKubeconfig(kubeconfigPath, { url, caPem: api.caPem }, { token: o.token ?? api.adminToken, user: o.user ?? 'admin' });

  return {
    url, kubeConfig, kubeconfigPath, requests,
    fail(rule) {
      const r = { ...rule, left: rule.times ?? 1 };
      rules.push(r);
      return {
        get remaining() { return r.left; },
        cancel: () => { r.left = 0; },
      };
    },
    cutWatches(mode = 'end') {
      const all = [...watches];
      for (const w of all) {
        watches.delete(w);
        w.up.destroy();
        if (mode === 'end') w.res.end();
        else w.res.socket?.destroy();
      }
      return all.length;
    },
    activeWatches: () => watches.size,
    async close() {
      for (const w of watches) w.up.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
