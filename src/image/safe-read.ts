/**
 * Reading the files of a checkpoint directory without trusting what they are.
 *
 * A checkpoint directory may come from another node or a volume someone else can write, and
 * `readFileSync` trusts the directory entry: a FIFO named manifest.json blocks the restore shim
 * forever (open(2) waits for a writer), a symlink to /dev/zero or /dev/urandom is read until
 * memory runs out, a sparse file claims terabytes. So every file is
 *   1. lstat'ed: it must be a regular file (not a symlink, FIFO, device, socket or directory:
 *      lockmig never writes anything else, and nothing is opened that is not one), no larger
 *      than the caller's limit (checked before a byte is read);
 *   2. opened with O_NOFOLLOW | O_NONBLOCK (a symlink swapped in after the lstat fails with
 *      ELOOP; a FIFO swapped in does not block the open), and fstat'ed again: same inode, still
 *      a regular file;
 *   3. read for exactly the size fstat gave, never more.
 */
import fs from 'node:fs';
import { ImageError } from './errors.js';

/** Largest manifest.json read (a million files is about 200 MB of manifest). */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;
/** Largest image file read (a million fds or locks is tens of MB per image). */
export const MAX_IMAGE_BYTES = 512 * 1024 * 1024;

export interface SafeReadOptions {
  /** what the file is, for messages ("image files.img listed in the manifest") */
  readonly what: string;
  readonly maxBytes: number;
  /**
   * size the file must have, checked against lstat before anything is read: smaller is
   * TRUNCATED, anything else CHECKSUM (the manifest records the exact size of every image)
   */
  readonly expectSize?: number;
}

function typeName(st: fs.Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link (checkpoint files are never followed through symlinks)';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'of an unknown type';
}

/** Read one file of a checkpoint directory under the rules above; throws ImageError naming `file`. */
export function readCheckpointFile(file: string, o: SafeReadOptions): Buffer {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ImageError('MISSING', file, `${o.what} is missing`);
    throw new ImageError('INVALID', file, `cannot read ${o.what}: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (!st.isFile()) throw new ImageError('INVALID', file, `not a regular file: ${o.what} is ${typeName(st)}`);
  checkSize(file, st.size, o);

  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (err) {
    throw new ImageError('INVALID', file, `cannot read ${o.what}: ${(err as Error).message}`, undefined, { cause: err });
  }
  try {
    const st2 = fs.fstatSync(fd);
    if (!st2.isFile() || st2.ino !== st.ino || st2.dev !== st.dev) {
      throw new ImageError('INVALID', file, `not a regular file: ${o.what} was replaced while it was opened`);
    }
    checkSize(file, st2.size, o);
    const buf = Buffer.allocUnsafe(st2.size);
    let off = 0;
    while (off < buf.length) {
      const n = fs.readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    if (off < buf.length) throw new ImageError('TRUNCATED', file, `${o.what} shrank while it was read (${off} of ${buf.length} bytes)`, off);
    return buf;
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError('INVALID', file, `cannot read ${o.what}: ${(err as Error).message}`, undefined, { cause: err });
  } finally {
    fs.closeSync(fd);
  }
}

function checkSize(file: string, size: number, o: SafeReadOptions): void {
  if (o.expectSize !== undefined) {
    if (size < o.expectSize) throw new ImageError('TRUNCATED', file, `${size} bytes, the manifest records ${o.expectSize}`, size);
    if (size !== o.expectSize) throw new ImageError('CHECKSUM', file, `${size} bytes, the manifest records ${o.expectSize}`);
  }
  if (size > o.maxBytes) throw new ImageError('INVALID', file, `larger than ${o.maxBytes} bytes (${size}): not a lockmig checkpoint file`);
}
