/**
 * Watch streams: newline-delimited JSON `{type, object}` events over a chunked 200 response, as kube-apiserver's
 * watch cache sends them — replay from a resourceVersion (ERROR 410 when it was compacted away), synthetic ADDED
 * events when none is given, ADDED/DELETED for objects entering/leaving the selectors, BOOKMARKs on request,
 * `sendInitialEvents`, `timeoutSeconds`, and Table-wrapped objects when kubectl asks for them.
 */
import type http from 'node:http';
import type { ApiCore } from './api.js';
import { gvString, type ResourceType } from './resources.js';
import { badRequest, statusBody } from './status.js';
import { ResourceVersionTooOld, type Obj, type StoreEvent } from './store.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import { toTable, wantsTable } from './table.js';

/** An open watch stream. */
export interface ActiveWatch {
  readonly storageKey: string;
  /** Ends the stream cleanly. */
  end(): void;
  /** Sends an ERROR event with a 410 Expired Status, then ends the stream. */
  goneAndEnd(): void;
}

export interface WatchContext {
  readonly api: ApiCore;
  /** Open watches register here while they run. */
  readonly registry: Set<ActiveWatch>;
  readonly bookmarkIntervalMs: number;
}

export function serveWatch(req: http.IncomingMessage, res: http.ServerResponse, ctx: WatchContext, t: ResourceType, namespace: string | undefined, q: URLSearchParams): void {
  const { api, registry, bookmarkIntervalMs } = ctx;
  const labels = parseLabelSelector(q.get('labelSelector'));
  const fields = parseFieldSelector(q.get('fieldSelector'), api.selectableFields(t));
  const rvParam = q.get('resourceVersion') ?? '';
  if (rvParam !== '' && !/^\d+$/.test(rvParam)) throw badRequest(`invalid resource version: ${rvParam}`);
  const bookmarks = q.get('allowWatchBookmarks') === 'true';
  const sendInitial = q.get('sendInitialEvents') === 'true';
  const timeoutSeconds = q.has('timeoutSeconds') ? Number(q.get('timeoutSeconds')) : undefined;
  const matches = (o: Obj | undefined): boolean =>
    o !== undefined && (!t.namespaced || !namespace || o.metadata?.namespace === namespace) && api.matches(t, o, labels, fields);

  res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
  res.flushHeaders();
  let done = false;
  const table = wantsTable(req.headers.accept);
  const write = (type: string, object: Obj) => {
    if (done) return;
    const out = table && type !== 'ERROR' && type !== 'BOOKMARK'
      ? toTable([object], t.crd?.printerColumns, { resourceVersion: object.metadata?.resourceVersion }) : object;
    res.write(JSON.stringify({ type, object: out }) + '\n');
  };
  const timers: NodeJS.Timeout[] = [];
  let unsubscribe: () => void = () => undefined;
  const w: ActiveWatch = {
    storageKey: t.storageKey,
    end: () => {
      if (done) return;
      done = true;
      unsubscribe();
      for (const tm of timers) clearTimeout(tm);
      registry.delete(w);
      res.end();
    },
    goneAndEnd: () => {
      write('ERROR', statusBody(410, 'Expired', `too old resource version: ${rvParam || 0} (${api.store.oldestRV})`));
      w.end();
    },
  };
  registry.add(w);
  res.on('close', () => w.end());
  req.on('close', () => w.end());

  const deliver = (ev: StoreEvent) => {
    if (ev.storageKey !== t.storageKey) return;
    const now = matches(ev.object);
    const before = matches(ev.prev);
    const out = api.present(t, ev.object);
    if (ev.type === 'ADDED') { if (now) write('ADDED', out); return; }
    if (ev.type === 'DELETED') { if (before || now) write('DELETED', out); return; }
    if (now && before) write('MODIFIED', out);
    else if (now) write('ADDED', out);
    else if (before) write('DELETED', out);
  };

  if (rvParam === '' || rvParam === '0' || sendInitial) {
    for (const o of api.store.list(t.storageKey, t.namespaced ? namespace : undefined)) {
      if (matches(o)) write('ADDED', api.present(t, o));
    }
    if (sendInitial && bookmarks) {
      write('BOOKMARK', { kind: t.kind, apiVersion: gvString(t), metadata: {
        resourceVersion: String(api.store.currentRV), annotations: { 'k8s.io/initial-events-end': 'true' } } });
    }
  } else {
    let events: StoreEvent[];
    try {
      events = api.store.eventsSince(t.storageKey, Number(rvParam));
    } catch (e) {
      if (e instanceof ResourceVersionTooOld) {
        write('ERROR', statusBody(410, 'Expired', e.message));
        w.end();
        return;
      }
      throw e;
    }
    for (const ev of events) deliver(ev);
  }
  unsubscribe = api.store.subscribe(deliver);
  if (bookmarks) {
    const tick = () => {
      write('BOOKMARK', { kind: t.kind, apiVersion: gvString(t), metadata: { resourceVersion: String(api.store.currentRV) } });
      timers[0] = setTimeout(tick, bookmarkIntervalMs);
    };
    timers[0] = setTimeout(tick, bookmarkIntervalMs);
  }
  if (timeoutSeconds !== undefined && timeoutSeconds > 0) timers.push(setTimeout(() => w.end(), timeoutSeconds * 1000));
}
