/**
 * The small HTTP server every lockmig daemon runs: `/healthz` (liveness), `/readyz` (readiness),
 * `/metrics` (prom-client registry, Prometheus text format). Checks are named functions that
 * return true or a reason string; a failing check answers 503 with the reasons (like the
 * kube-apiserver's `?verbose`).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export type Check = () => true | string;

export interface ServerOptions {
  /** `:8080`, `0.0.0.0:8080`, `127.0.0.1:0` (0 = any free port) */
  readonly addr: string;
  readonly health?: Readonly<Record<string, Check>>;
  readonly ready?: Readonly<Record<string, Check>>;
  readonly registry?: Registry;
  /** more GET endpoints by path (the agent's /locks) */
  readonly routes?: Readonly<Record<string, (url: URL) => Promise<{ code: number; body: string; type?: string }>>>;
}

export interface RunningServer {
  readonly port: number;
  readonly host: string;
  close(): Promise<void>;
}

/** Parses `host:port` / `:port`; throws on anything else. */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]*):(\d{1,5})$/.exec(addr.trim());
  if (!m) throw new Error(`invalid address "${addr}" (expected [host]:port, e.g. :8080)`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`invalid port in "${addr}"`);
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '');
  return { host: host === '' ? '0.0.0.0' : host, port };
}

function runChecks(checks: Readonly<Record<string, Check>> | undefined): { ok: boolean; body: string } {
  const lines: string[] = [];
  let ok = true;
  for (const [name, check] of Object.entries(checks ?? {})) {
    let r: true | string;
    try {
      r = check();
    } catch (err) {
      r = (err as Error).message;
    }
    if (r === true) lines.push(`[+]${name} ok`);
    else {
      ok = false;
      lines.push(`[-]${name} failed: ${r}`);
    }
  }
  return { ok, body: `${lines.join('\n')}${lines.length ? '\n' : ''}${ok ? 'ok' : 'failed'}\n` };
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const { host, port } = parseAddr(opts.addr);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    if (url.pathname === '/healthz' || url.pathname === '/livez') {
      const r = runChecks(opts.health);
      return send(r.ok ? 200 : 503, r.body);
    }
    if (url.pathname === '/readyz') {
      const r = runChecks({ ...opts.health, ...opts.ready });
      return send(r.ok ? 200 : 503, r.body);
    }
    if (url.pathname === '/metrics' && opts.registry) {
      opts.registry.metrics().then(
        (text) => send(200, text, opts.registry?.contentType),
        (err: unknown) => send(500, `metrics failed: ${(err as Error).message}\n`),
      );
      return;
    }
    const route = opts.routes?.[url.pathname];
    if (route) {
      route(url).then(
        (r) => send(r.code, r.body, r.type),
        (err: unknown) => send(500, `${url.pathname} failed: ${(err as Error).message}\n`),
      );
      return;
    }
    send(404, 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return {
    port: a.port,
    host: a.address,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
