/**
 * No Docker engine runs here, so the Dockerfile is checked statically: its stages, that the
 * build stage runs exactly the npm scripts CI runs (and that they exist), that the runtime stage
 * is non-root, tool-free, HEALTHCHECK-free, labelled, and starts the compiled CLI, and that the
 * build context (.dockerignore) keeps what the build needs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/env.js';

interface Instruction { readonly op: string; readonly args: string; readonly line: number }
interface Stage { readonly from: string; readonly name?: string; readonly body: Instruction[] }

/** Dockerfile → instructions (comments dropped, `\` continuations joined). */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let cur = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\s+$/, '');
    if (cur === '' && (/^\s*#/.test(line) || line.trim() === '')) return;
    if (/^\s*#/.test(line)) return; // comment inside a continuation
    if (cur === '') start = i + 1;
    if (line.endsWith('\\')) { cur += `${line.slice(0, -1)} `; return; }
    cur += line;
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(cur);
    if (!m) throw new Error(`Dockerfile line ${start}: cannot parse "${cur}"`);
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, ' ').trim(), line: start });
    cur = '';
  });
  return out;
}

function stages(ins: Instruction[]): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const st: Stage[] = [];
  for (const i of ins) {
    if (i.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args)!;
      const from = m[1]!.replace(/\$\{(\w+)\}/g, (_, n: string) => args.get(n) ?? `\${${n}}`);
      st.push({ from, name: m[2], body: [] });
    } else if (st.length === 0) {
      if (i.op === 'ARG') { const [k, v] = i.args.split('='); args.set(k!, v ?? ''); }
    } else {
      st[st.length - 1]!.body.push(i);
    }
  }
  return { args, stages: st };
}

const dockerfile = fs.readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
const ins = parseDockerfile(dockerfile);
const { stages: st } = stages(ins);
const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
const build = st.find((s) => s.name === 'build')!;
const runtime = st[st.length - 1]!;
const runs = (s: Stage): string[] => s.body.filter((i) => i.op === 'RUN').map((i) => i.args);

describe('Dockerfile', () => {
  it('has a build stage on node:20-bookworm-slim and a runtime stage FROM scratch (one Node.js binary: the shim bundle\'s)', () => {
    expect(st.map((s) => s.name)).toEqual(['build', 'runtime']);
    expect(build.from).toBe('node:20-bookworm-slim');
    expect(runtime.from).toBe('scratch');
    // node on PATH is a link into the shim bundle, and the loader finds the bundle's libraries
    const r = runs(build).join('\n');
    expect(r).toMatch(/ln -s \/app\/shim\/bin\/node \/rootfs\/usr\/local\/bin\/node/);
    expect(r).toMatch(/ln -s \/app\/shim\/lib\/ld\.so/);
    expect(r).toMatch(/ldconfig -r \/rootfs/);
    expect(runtime.body.some((i) => i.op === 'ENV' && /PATH=\/usr\/local\/bin/.test(i.args))).toBe(true);
  });

  it('the build stage installs from the lockfile, builds with the npm script CI uses, prunes dev deps, builds the shim bundle', () => {
    const r = runs(build);
    const idx = (re: RegExp): number => r.findIndex((x) => re.test(x));
    expect(idx(/\bnpm ci\b/)).toBeGreaterThanOrEqual(0);
    expect(idx(/\bnpm run build\b/)).toBeGreaterThan(idx(/\bnpm ci\b/));
    expect(idx(/\bnpm prune --omit=dev\b/)).toBeGreaterThan(idx(/\bnpm run build\b/));
    expect(idx(/dist\/src\/bundle\/build\.js --out \/app\/shim/)).toBeGreaterThan(idx(/\bnpm prune/));
    expect(fs.existsSync(path.join(REPO_ROOT, 'src/bundle/build.ts'))).toBe(true);
    expect(build.body.some((i) => i.op === 'COPY' && /package-lock\.json/.test(i.args))).toBe(true);
  });

  it('every npm script it calls exists in package.json, and CI runs the same build script', () => {
    const called = [...dockerfile.matchAll(/\bnpm run ([\w:-]+)/g)].map((m) => m[1]!);
    expect(called.length).toBeGreaterThan(0);
    for (const s of called) expect(pkg.scripts[s], `npm run ${s}`).toBeDefined();
    // CI runs `npm test`, which starts with `npm run build`
    const ci = fs.readFileSync(path.join(REPO_ROOT, '.ci/run'), 'utf8');
    expect(ci).toMatch(/^npm test$/m);
    expect(pkg.scripts.test).toMatch(/^npm run build\b/);
  });

  it('the runtime stage runs the compiled CLI as a non-root user, with no HEALTHCHECK', () => {
    expect(ins.some((i) => i.op === 'HEALTHCHECK')).toBe(false);
    expect(dockerfile).toMatch(/#.*No HEALTHCHECK.*probes|probes.*healthz/is);
    const users = runtime.body.filter((i) => i.op === 'USER');
    expect(users.map((u) => u.args)).toEqual(['65532:65532']);
    const ep = runtime.body.filter((i) => i.op === 'ENTRYPOINT');
    expect(ep).toHaveLength(1);
    expect(JSON.parse(ep[0]!.args)).toEqual(['node', '/app/dist/src/cli/main.js']);
    // that path is where tsc puts the CLI (rootDir ".", outDir "dist")
    const tsconfig = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: { outDir: string; rootDir: string } };
    expect(path.posix.join('/app', tsconfig.compilerOptions.outDir, path.posix.relative(tsconfig.compilerOptions.rootDir, 'src/cli/main.js'))).toBe('/app/dist/src/cli/main.js');
    // USER comes after the last RUN/COPY that needs root
    const userAt = runtime.body.indexOf(users[0]!);
    expect(runtime.body.slice(userAt + 1).some((i) => i.op === 'RUN')).toBe(false);
  });

  it('the runtime stage has no build tools, package installs or npm: nothing runs in it, and only lockmig\'s files are copied', () => {
    expect(runs(runtime)).toEqual([]);
    for (const c of runtime.body.filter((i) => i.op === 'COPY').map((i) => i.args)) {
      expect(c).toMatch(/^--from=build \/(app|rootfs)\//);
      expect(c).not.toMatch(/npm|corepack|yarn/);
    }
  });

  it('the runtime stage copies the pruned build output and the shim bundle, and tells the agent where the bundle is', () => {
    const copies = runtime.body.filter((i) => i.op === 'COPY').map((i) => i.args);
    for (const p of ['/app/dist', '/app/node_modules', '/app/package.json', '/app/shim']) {
      expect(copies.some((c) => c.startsWith('--from=build ') && c.includes(p)), p).toBe(true);
    }
    expect(runtime.body.some((i) => i.op === 'ENV' && /LOCKMIG_SHIM_BUNDLE=\/app\/shim/.test(i.args))).toBe(true);
  });

  it('carries the OCI labels', () => {
    const labels = runtime.body.filter((i) => i.op === 'LABEL').map((i) => i.args).join(' ');
    for (const k of ['title', 'description', 'source', 'licenses', 'version', 'revision', 'created']) {
      expect(labels, k).toMatch(new RegExp(`org\\.opencontainers\\.image\\.${k}=`));
    }
  });
});

describe('.dockerignore', () => {
  const lines = fs.readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  it('keeps dependencies, build output and git out of the context', () => {
    for (const p of ['node_modules', 'dist', '.git', 'test-results.json']) expect(lines, p).toContain(p);
  });
  it('keeps what the build needs in the context', () => {
    for (const p of ['src', 'package.json', 'package-lock.json', 'tsconfig.json', 'crds']) {
      expect(lines.some((l) => l === p || l === `${p}/` || l === `/${p}`), p).toBe(false);
    }
  });
  it('leaves the benchmarks out (not shipped; bench/scale.ts needs the test harness, which is not in the context either)', () => {
    expect(lines).toContain('bench');
    expect(lines).toContain('test');
  });
});
