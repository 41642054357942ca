/**
 * The HTTP(S) front of the fake API server: routing of Kubernetes REST paths, discovery documents,
 * list/watch streaming (newline-delimited JSON events, bookmarks, 410 Gone), a request log and
 * injectable failures.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { ApiCore, type WriteOptions } from './api.js';
import { apiResourceList } from './resources.js';
import { ApiStatusError, badRequest, statusBody } from './status.js';
import type { Obj } from './store.js';
import { toTable, wantsTable } from './table.js';
import { serveWatch, type ActiveWatch, type WatchContext } from './watch.js';

export interface RequestRecord {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly watch: boolean;
  readonly contentType?: string;
  /** HTTP status sent (set when the response head is written). */
  status?: number;
  readonly at: number;
}

/** A failure to inject into matching requests; by default the next one request. */
export interface FailureSpec {
  /** HTTP method to match (any if absent). */
  method?: string;
  /** Substring of, or RegExp tested against, the request path (without query). */
  path?: string | RegExp;
  /** Match only watch requests (true) or only non-watch requests (false). */
  watch?: boolean;
  /** How many matching requests fail (default 1). */
  times?: number;
  /**
   * - `status` (default): answer with a Status of `code` (default 500)
   * - `drop`: watches get 200 and an immediately closed stream; other requests get their socket destroyed
   * - `gone`: watches get 200, one ERROR event carrying a 410 Expired Status, then the end of the stream
   * - `reset`: the socket is destroyed before any response
   */
  action?: 'status' | 'drop' | 'gone' | 'reset';
  code?: number;
  reason?: string;
  message?: string;
}

export interface FailureHandle { readonly remaining: number; cancel(): void }

const REASONS: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict',
  410: 'Expired', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
};


export interface ServerOptions {
  tls?: { cert: string; key: string };
  token: string;
  bookmarkIntervalMs: number;
  host: string;
}

export class FakeHttpServer {
  readonly requests: RequestRecord[] = [];
  private readonly failures: (FailureSpec & { left: number })[] = [];
  private readonly watches = new Set<ActiveWatch>();
  private readonly sockets = new Set<Socket>();
  private readonly server: http.Server;
  private closed = false;
  private readonly watchCtx: WatchContext;

  constructor(readonly api: ApiCore, private readonly opts: ServerOptions) {
    this.watchCtx = { api, registry: this.watches, bookmarkIntervalMs: opts.bookmarkIntervalMs };
    api.onStorageRemoved = (key) => { for (const w of [...this.watches]) if (w.storageKey === key) w.end(); };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => { void this.handle(req, res); };
    this.server = opts.tls ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, handler) : http.createServer(handler);
    this.server.on(opts.tls ? 'secureConnection' : 'connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async listen(port = 0): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.opts.host, () => resolve());
    });
    const a = this.server.address() as AddressInfo;
    return `${this.opts.tls ? 'https' : 'http'}://${this.opts.host}:${a.port}`;
  }

  get activeWatchCount(): number { return this.watches.size; }

  /** Ends every watch stream cleanly (the client sees the connection close, as on an apiserver restart). */
  dropWatches(): void {
    for (const w of [...this.watches]) w.end();
  }

  /** Sends every open watch an ERROR 410 event, then ends it. */
  expireWatches(): void {
    for (const w of [...this.watches]) w.goneAndEnd();
  }

  injectFailure(spec: FailureSpec): FailureHandle {
    const f = { ...spec, left: spec.times ?? 1 };
    this.failures.push(f);
    return {
      get remaining() { return f.left; },
      cancel: () => { f.left = 0; },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dropWatches();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
      this.server.closeAllConnections?.();
    });
  }

  // ------------------------------------------------------------------------------------------------

  private takeFailure(method: string, path: string, watch: boolean): (FailureSpec & { left: number }) | undefined {
    for (const f of this.failures) {
      if (f.left <= 0) continue;
      if (f.method && f.method.toUpperCase() !== method) continue;
      if (f.watch !== undefined && f.watch !== watch) continue;
      if (f.path !== undefined && (typeof f.path === 'string' ? !path.includes(f.path) : !f.path.test(path))) continue;
      f.left -= 1;
      return f;
    }
    return undefined;
  }

  private send(res: http.ServerResponse, code: number, body: unknown, warnings: readonly string[] = []): void {
    const text = JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) };
    if (warnings.length) headers.Warning = warnings.map((w) => `299 - ${JSON.stringify(w)}`);
    if (code === 429) headers['Retry-After'] = '1';
    res.writeHead(code, headers);
    res.end(text);
  }

  private sendError(res: http.ServerResponse, e: unknown): void {
    if (res.headersSent) { res.destroy(); return; }
    if (e instanceof ApiStatusError) { this.send(res, e.code, e.toStatus()); return; }
    const msg = e instanceof Error ? e.message : String(e);
    this.send(res, 500, statusBody(500, 'InternalError', `Internal error occurred: ${msg}`, { causes: [{ message: msg }] }));
  }

  private async readBody(req: http.IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }

  private parseJson(text: string): unknown {
    if (text.trim() === '') return undefined;
    try { return JSON.parse(text); } catch (e) {
      throw badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
    }
  }

  private authorized(req: http.IncomingMessage, path: string): boolean {
    if (['/version', '/healthz', '/livez', '/readyz'].includes(path)) return true;
    // client-go (kubectl) never sends a bearer token over plain HTTP; like the old insecure port, plain HTTP
    // accepts anonymous requests, but a wrong token is refused everywhere and HTTPS requires the token
    if (req.headers.authorization === undefined && !this.opts.tls) return true;
    return req.headers.authorization === `Bearer ${this.opts.token}`;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = (req.method ?? 'GET').toUpperCase();
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const query = Object.fromEntries(url.searchParams.entries());
    const isWatch = query.watch === 'true' || query.watch === '1' || /^\/apis?\/(?:[^/]+\/)?[^/]+\/watch\//.test(path);
    const rec: RequestRecord = {
      method, path, query, watch: isWatch, contentType: req.headers['content-type'], at: Date.now(),
    };
    this.requests.push(rec);
    res.on('finish', () => { rec.status = res.statusCode; });
    const origWriteHead = res.writeHead.bind(res);
    res.writeHead = ((code: number, ...rest: unknown[]) => { rec.status = code; return (origWriteHead as (...a: unknown[]) => http.ServerResponse)(code, ...rest); }) as typeof res.writeHead;
    try {
      if (!this.authorized(req, path)) {
        this.send(res, 401, statusBody(401, 'Unauthorized', 'Unauthorized'));
        return;
      }
      const failure = this.takeFailure(method, path, isWatch);
      if (failure) {
        const action = failure.action ?? 'status';
        if (action === 'reset' || (action === 'drop' && !isWatch)) { req.socket.destroy(); return; }
        if (action === 'status') {
          const code = failure.code ?? 500;
          const reason = failure.reason ?? REASONS[code] ?? 'InternalError';
          this.send(res, code, statusBody(code, reason, failure.message ?? `injected failure (${code})`));
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
        if (action === 'gone') {
          res.write(JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', 'too old resource version: injected') }) + '\n');
        }
        res.end();
        return;
      }
      await this.route(req, res, method, path, url.searchParams, isWatch);
    } catch (e) {
      this.sendError(res, e);
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, method: string, path: string, q: URLSearchParams, isWatch: boolean): Promise<void> {
    const seg = path.split('/').filter(Boolean).map(decodeURIComponent);
    if (path === '/version') {
      this.send(res, 200, { major: '1', minor: '31', gitVersion: 'v1.31.0-lockmig-fake', gitCommit: '', gitTreeState: 'clean',
        buildDate: '2024-08-13T00:00:00Z', goVersion: 'go1.22.5', compiler: 'gc', platform: 'linux/amd64' });
      return;
    }
    if (['/healthz', '/livez', '/readyz'].includes(path)) {
      res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end('ok'); return;
    }
    if (path === '/openapi/v2') {
      if (String(req.headers.accept ?? '').includes('protobuf')) {
        // kubectl asks for the gnostic protobuf form: an empty document (swagger, info, paths), so that it skips
        // client-side schema validation exactly as it does for types a server publishes no schema for
        res.writeHead(200, { 'Content-Type': 'application/com.github.proto-openapi.spec.v2.v1.0+protobuf' });
        res.end(OPENAPI_V2_PB);
        return;
      }
      this.send(res, 200, { swagger: '2.0', info: { title: 'Kubernetes', version: 'v1.31.0' }, paths: {}, definitions: {} });
      return;
    }
    if (path === '/openapi/v3') { this.send(res, 200, { paths: {} }); return; }
    if (seg[0] === 'api' && seg.length === 1) {
      this.send(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: req.socket.localAddress + ':' + req.socket.localPort }] });
      return;
    }
    if (seg[0] === 'apis' && seg.length === 1) {
      this.send(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: this.api.groups().map((g) => this.groupDoc(g)) });
      return;
    }
    if (seg[0] === 'apis' && seg.length === 2) {
      const g = this.api.groups().find((x) => x.name === seg[1]);
      if (!g) throw notFoundPath();
      this.send(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...this.groupDoc(g) });
      return;
    }
    let group: string; let version: string; let rest: string[];
    if (seg[0] === 'api' && seg.length >= 2) { group = ''; version = seg[1]!; rest = seg.slice(2); }
    else if (seg[0] === 'apis' && seg.length >= 3) { group = seg[1]!; version = seg[2]!; rest = seg.slice(3); }
    else throw notFoundPath();
    const gvTypes = this.api.allTypes().filter((t) => t.group === group && t.version === version);
    if (gvTypes.length === 0) throw notFoundPath();
    if (rest.length === 0) {
      if (method !== 'GET') throw notFoundPath();
      this.send(res, 200, apiResourceList(gvTypes, group ? `${group}/${version}` : version));
      return;
    }
    if (rest[0] === 'watch') rest = rest.slice(1);
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && this.api.typeFor(group, version, rest[2]!)?.namespaced) {
      namespace = rest[1]!;
      rest = rest.slice(2);
    }
    const [resource, name, sub, ...extra] = rest;
    const t = this.api.typeFor(group, version, resource!);
    if (!t || extra.length) throw notFoundPath();
    if (namespace !== undefined && !t.namespaced) throw notFoundPath();
    if (sub !== undefined && (sub !== 'status' || !t.statusSubresource)) throw notFoundPath();
    if (name !== undefined && t.namespaced && namespace === undefined) throw notFoundPath();
    const ns = namespace ?? '';
    const opts: WriteOptions = {
      dryRun: q.get('dryRun') === 'All',
      fieldValidation: q.get('fieldValidation') ?? undefined,
      fieldManager: q.get('fieldManager') ?? undefined,
      force: q.has('force') ? q.get('force') === 'true' : undefined,
      subresource: sub === 'status' ? 'status' : undefined,
    };
    if (name === undefined) {
      switch (method) {
        case 'GET':
          if (isWatch) { serveWatch(req, res, this.watchCtx, t, namespace, q); return; }
          {
            const list = this.api.list(t, namespace, {
              labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined,
              limit: q.has('limit') ? Number(q.get('limit')) : undefined, continue: q.get('continue') ?? undefined,
              resourceVersion: q.get('resourceVersion') ?? undefined, resourceVersionMatch: q.get('resourceVersionMatch') ?? undefined,
            });
            this.send(res, 200, wantsTable(req.headers.accept) ? toTable(list.items as Obj[], t.crd?.printerColumns, list.metadata as Obj) : list);
          }
          return;
        case 'POST': {
          if (t.namespaced && namespace === undefined) throw notFoundPath();
          const body = this.parseJson(await this.readBody(req));
          const r = await this.api.create(t, ns, body, opts);
          this.send(res, 201, r.obj, r.warnings);
          return;
        }
        case 'DELETE':
          this.send(res, 200, await this.api.deleteCollection(t, namespace, {
            labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined,
          }));
          return;
        default: throw new ApiStatusError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
      }
    }
    switch (method) {
      case 'GET':
        if (isWatch) { q.set('fieldSelector', [q.get('fieldSelector'), `metadata.name=${name}`].filter(Boolean).join(',')); serveWatch(req, res, this.watchCtx, t, namespace, q); return; }
        {
          const obj = this.api.get(t, ns, name);
          this.send(res, 200, wantsTable(req.headers.accept)
            ? toTable([obj], t.crd?.printerColumns, { resourceVersion: obj.metadata.resourceVersion }) : obj);
        }
        return;
      case 'PUT': {
        const body = this.parseJson(await this.readBody(req));
        const r = await this.api.update(t, ns, name, body, opts);
        this.send(res, r.created ? 201 : 200, r.obj, r.warnings);
        return;
      }
      case 'PATCH': {
        const raw = await this.readBody(req);
        const r = await this.api.patch(t, ns, name, req.headers['content-type'] ?? '', raw, opts);
        this.send(res, r.created ? 201 : 200, r.obj, r.warnings);
        return;
      }
      case 'DELETE': {
        if (sub) throw new ApiStatusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        const body = this.parseJson(await this.readBody(req)) as Obj | undefined;
        const options: Obj = { ...(body ?? {}) };
        const r = await this.api.deleteWithResponse(t, ns, name, options, opts);
        this.send(res, r.code, r.body);
        return;
      }
      default: throw new ApiStatusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  private groupDoc(g: { name: string; versions: string[] }): Obj {
    const versions = g.versions.map((v) => ({ groupVersion: `${g.name}/${v}`, version: v }));
    return { name: g.name, versions, preferredVersion: versions[0] };
  }
}

function pbField(num: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(num << 3) | 2, body.length]), body]);
}
/** openapi_v2.Document{swagger: "2.0", info: {title, version}, paths: {}} in protobuf wire format. */
const OPENAPI_V2_PB = Buffer.concat([
  pbField(1, Buffer.from('2.0')),
  pbField(2, Buffer.concat([pbField(1, Buffer.from('Kubernetes')), pbField(2, Buffer.from('v1.31.0'))])),
  pbField(8, Buffer.alloc(0)),
]);

function notFoundPath(): ApiStatusError {
  return new ApiStatusError(404, 'NotFound', 'the server could not find the requested resource', {
    causes: [{ reason: 'UnexpectedServerResponse', message: '404 page not found' }],
  });
}

