/**
 * Kubelet checkpoint import benchmark (spec.source.kubeletCheckpoint): a python3 process (not
 * lockmig code) holding 2,000 open files and 400 locks of every kind is dumped once by CRIU 4.x
 * (`criu dump --file-locks --leave-running`, memory pages included), and the images are packed
 * the way CRI-O packs a kubelet checkpoint (checkpoint/ + spec.dump, an uncompressed tar). Then,
 * one after the other in every round, on the same machine load:
 *
 *  - baseline: the importer alone (loadCheckpoint: what `lockmig inspect ARCHIVE` reads);
 *  - the agent's import as it runs for a LockCheckpoint (importForCheckpoint: open without
 *    following links, read, namespace and fd checks, write the image, plan the ConfigMaps);
 *  - for scale: the agent's live dump of the same, still running process (dumpProcesses +
 *    writeDump), what a LockCheckpoint naming the pod would cost instead.
 *
 * Medians of LOCKMIG_BENCH_ROUNDS (default 7) rounds after one warm-up round.
 * Run alone: node dist/bench/import.js (root, CRIU 4.x; prints JSON). bench/run.ts calls benchImport().
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { importForCheckpoint } from '../src/agent/import.js';
import { dumpProcesses } from '../src/engine/dump.js';
import { writeDump } from '../src/engine/write.js';
import { loadCheckpoint } from '../src/image/input.js';
import { silentLogger } from '../src/log/logger.js';
import { median, ratioGoal, round1, round2, rounds as roundsOf, startLockHolder, type BenchResult } from './common.js';
import { findCriu4, runCriuDump } from './baselines.js';

const FILE = 'checkpoint-db-0_shop-db-2026-12-05T07:00:00Z.tar';

/** CRI-O's layout: the CRIU images under checkpoint/, spec.dump naming the pod (python3 packs it: no lockmig code). */
function pack(images: string, out: string): void {
  const py = [
    'import io, json, os, sys, tarfile',
    'src, out = sys.argv[1:3]',
    "spec = {'annotations': {'io.container.manager': 'cri-o', 'io.kubernetes.container.name': 'db', 'io.kubernetes.pod.name': 'db-0', 'io.kubernetes.pod.namespace': 'shop', 'io.kubernetes.pod.uid': '6d1f6f39-0c8e-4f5b-9e39-3f1f0c1b2a10'}}",
    "with tarfile.open(out, 'w') as t:",
    '    for n in sorted(os.listdir(src)):',
    "        t.add(os.path.join(src, n), arcname='checkpoint/' + n)",
    '    d = json.dumps(spec).encode(); ti = tarfile.TarInfo("spec.dump"); ti.size = len(d); t.addfile(ti, io.BytesIO(d))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', py, images, out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`packing the archive failed: ${r.stderr}`);
}

export async function benchImport(opts: { files?: number; locks?: number; rounds?: number } = {}): Promise<BenchResult[]> {
  const files = opts.files ?? 2_000;
  const locks = opts.locks ?? 400;
  const rounds = opts.rounds ?? roundsOf(7);
  const criu = findCriu4();
  if ('error' in criu) throw new Error(`kubelet checkpoint import bench needs CRIU 4.x to make a real archive: ${criu.error}`);
  const work = fs.mkdtempSync(path.join(tmpdir(), 'lockmig-bench-import-'));
  const holder = await startLockHolder(work, files, locks, 40);
  try {
    const images = path.join(work, 'criu');
    runCriuDump(criu.bin, holder.pid!, images);
    const kubeletDir = path.join(work, 'kubelet-checkpoints');
    fs.mkdirSync(kubeletDir);
    pack(images, path.join(kubeletDir, FILE));
    const archiveBytes = fs.statSync(path.join(kubeletDir, FILE)).size;
    const storageRoot = path.join(work, 'store');
    const deps = { node: 'n', storageRoot, logger: silentLogger(), write: writeDump, now: () => new Date(), kubeletCheckpointDir: kubeletDir };
    const load: number[] = [];
    const agent: number[] = [];
    const live: number[] = [];
    let lockCount = 0;
    for (let i = 0; i <= rounds; i++) {
      let t = performance.now();
      await loadCheckpoint(path.join(kubeletDir, FILE));
      const a = performance.now() - t;
      const cp = { metadata: { name: `b${i}`, namespace: 'shop' }, spec: { source: { kubeletCheckpoint: { node: 'n', file: FILE } } } } as Parameters<typeof importForCheckpoint>[0];
      t = performance.now();
      const out = await importForCheckpoint(cp, deps);
      const b = performance.now() - t;
      if (out.report.state !== 'Dumped') throw new Error(`import failed: ${out.report.reason}: ${out.report.message}`);
      lockCount = out.report.locks?.total ?? 0;
      t = performance.now();
      writeDump(path.join(work, `live-${i}`), dumpProcesses({ pids: [holder.pid!] }));
      const c = performance.now() - t;
      if (i === 0) continue; // warm-up
      load.push(a); agent.push(b); live.push(c);
    }
    const [l, g, v] = [median(load), median(agent), median(live)];
    const notes = `${files} files, ${lockCount} locks; uncompressed archive of ${(archiveBytes / 1048576).toFixed(1)} MiB (memory pages included)`;
    return [
      { name: 'agent import of a kubelet checkpoint (read + checks + write + ConfigMap plan)', baseline: 'the importer alone (lockmig inspect ARCHIVE)', baselineMs: round1(l), ms: round1(g), ratio: round2(g / l), goal: ratioGoal(g, l, 3), notes },
      { name: 'agent import of a kubelet checkpoint', baseline: 'agent live dump + write of the same running process', baselineMs: round1(v), ms: round1(g), ratio: round2(g / v), notes },
    ];
  } finally {
    holder.kill('SIGKILL');
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  benchImport().then((r) => console.log(JSON.stringify(r, null, 2)), (err: unknown) => { console.error(err); process.exit(1); });
}
