/**
 * writeCheckpoint as the dump CLI and the agent call it: with liblockmig's parallel fsync when
 * the library is there (the image files and the manifest are flushed in one go instead of one
 * after the other), otherwise exactly writeCheckpoint.
 */
import { writeCheckpoint, type Checkpoint } from '../image/index.js';
import { nativeLib } from '../sys/native.js';

export function writeDump(dir: string, ckpt: Checkpoint): void {
  const native = nativeLib();
  writeCheckpoint(dir, ckpt, native ? { syncAll: (fds) => native.fsyncMany(fds) } : {});
}
