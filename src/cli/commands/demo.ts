/**
 * `lockmig demo [--handover] [--keep] [--pause] [--json]`: migrate real OFD, POSIX (SQLite) and
 * flock locks between two processes and prove it (see src/demo/run.ts; with --handover the
 * same-node handover with no lock-free window, src/demo/handover.ts).
 * Exit codes: 0 every lock moved and was proven held, 1 a check failed, 77 not root.
 */
import { createInterface } from 'node:readline';
import { EXIT, parse } from '../args.js';
import { runDemo, missingTools, NOT_ROOT_HELP } from '../../demo/run.js';
import { runHandoverDemo } from '../../demo/handover.js';

export const summary = 'migrate real locks between two processes on this machine and prove it (needs root)';

const USAGE = `usage: lockmig demo [--handover] [--keep] [--pause] [--json]

  (default)   dump → stop the old workload → restore through the shim: locks are re-taken,
              and are free for the time between the stop and the restore (measured)
  --handover  same-node handover, the code of \`lockmig handover\`: the vault takes the old
              workload's open file descriptions (pidfd_getfd) and passes them to the shim,
              so OFD and flock locks are never free; POSIX (SQLite) locks are re-taken by a
              waiter queued before the stop, and their window is measured. Independent
              contenders (a flock -n shell loop, a python3 F_OFD_SETLK loop) hammer the locks
              throughout; their attempts and wins are reported (OFD/flock wins must be 0)
  --keep      keep the temporary volume and the checkpoint images for inspection
  --pause     before cleaning up, wait for Enter (or end of input) while the new workload
              still holds the locks, e.g. to look with lslocks or /proc/locks
  --json      also print the report as one JSON object on the last line`;

function waitForEnter(): Promise<void> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin });
    const done = () => { rl.close(); process.stdin.pause(); resolve(); };
    rl.once('line', done);
    rl.once('close', done);
  });
}

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, { handover: { type: 'boolean' }, keep: { type: 'boolean' }, pause: { type: 'boolean' }, json: { type: 'boolean' } }, USAGE);
  if (!p) return EXIT.OK;
  if (process.getuid?.() !== 0) {
    process.stderr.write(`${NOT_ROOT_HELP}\n`);
    return EXIT.NOT_ROOT;
  }
  const lacking = missingTools();
  if (lacking.length > 0) {
    process.stderr.write(`lockmig demo needs ${lacking.join(', ')} (Debian: apt-get install util-linux python3 mount sqlite3)\n`);
    return EXIT.FAILURE;
  }
  const out = (l: string) => process.stdout.write(`${l}\n`);
  const pause = p.values.pause === true
    ? async (pid: number) => {
      out(`\npaused: the new workload (pid ${pid}) holds the locks; inspect with \`lslocks -p ${pid}\` or /proc/locks, then press Enter to clean up`);
      await waitForEnter();
    }
    : undefined;
  const opts = { out, keep: p.values.keep === true, ...(pause ? { pause } : {}) };
  const report = p.values.handover === true ? await runHandoverDemo(opts) : await runDemo(opts);
  if (p.values.json === true) {
    process.stdout.write(`${JSON.stringify(report, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  }
  return report.proofs.every((x) => x.ok) ? EXIT.OK : EXIT.FAILURE;
}
