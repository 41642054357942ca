/**
 * Where CRIU images are read from: a directory `criu dump -D DIR` wrote, or the `checkpoint/`
 * entries of a container checkpoint archive (held in memory by src/image/archive/). Either way
 * the reader sees plain image names ("fdinfo-2.img") and gets bounded byte buffers; every error
 * names the image as the user knows it (`DIR/files.img`, `ARCHIVE:checkpoint/files.img`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ImageError } from '../errors.js';

export interface CriuImageSource {
  /** names of the images present (plain file names) */
  names(): readonly string[];
  has(name: string): boolean;
  /** the bytes of one image; throws ImageError MISSING when absent */
  read(name: string): Buffer;
  /** how to name an image in messages */
  label(name: string): string;
  /** when the image was written, if known */
  mtime(name: string): Date | undefined;
}

/** Bounds on what one CRIU image may cost to read. */
export interface CriuReadLimits {
  /** largest image file read into memory (bytes) */
  readonly maxImageBytes: number;
  /** most protobuf entries one image may hold */
  readonly maxEntries: number;
}

/**
 * files.img of a process with a million fds is ~100 MiB; 2M entries decoded is ~1 GiB of heap
 * at worst, which is where a hostile image is stopped.
 */
export const DEFAULT_CRIU_LIMITS: CriuReadLimits = { maxImageBytes: 256 << 20, maxEntries: 2_000_000 };

/** Names CRIU gives its images; anything else in the directory is ignored. */
export const IMAGE_NAME_RE = /^[a-z][a-z0-9-]*(?:-\d+)?\.img$/;

/**
 * Images of a directory. Only regular files are read (opened with O_NOFOLLOW, so a symlink
 * planted in the directory is refused rather than followed), each within `maxImageBytes`.
 */
export function dirSource(dir: string, limits: CriuReadLimits = DEFAULT_CRIU_LIMITS): CriuImageSource {
  let list: string[];
  try {
    list = fs.readdirSync(dir).filter((n) => IMAGE_NAME_RE.test(n)).sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ImageError(code === 'ENOENT' ? 'MISSING' : 'INVALID', dir, `cannot read the CRIU image directory: ${(err as Error).message}`, undefined, { cause: err });
  }
  const present = new Set(list);
  const label = (name: string): string => path.join(dir, name);
  return {
    names: () => list,
    has: (name) => present.has(name),
    label,
    mtime: (name) => { try { return fs.statSync(label(name)).mtime; } catch { return undefined; } },
    read(name) {
      const file = label(name);
      if (!present.has(name)) throw new ImageError('MISSING', file, 'is missing from the CRIU image directory');
      let fd: number;
      try {
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ELOOP') throw new ImageError('INVALID', file, 'is a symbolic link; CRIU images are regular files', undefined, { cause: err });
        throw new ImageError(code === 'ENOENT' ? 'MISSING' : 'INVALID', file, `cannot open: ${(err as Error).message}`, undefined, { cause: err });
      }
      try {
        const st = fs.fstatSync(fd);
        if (!st.isFile()) throw new ImageError('INVALID', file, 'is not a regular file');
        if (st.size > limits.maxImageBytes) throw new ImageError('INVALID', file, `is ${st.size} bytes, more than the ${limits.maxImageBytes}-byte limit for one image`);
        const buf = Buffer.alloc(st.size);
        let off = 0;
        while (off < buf.length) {
          const n = fs.readSync(fd, buf, off, buf.length - off, off);
          if (n === 0) break;
          off += n;
        }
        return off === buf.length ? buf : buf.subarray(0, off);
      } finally {
        fs.closeSync(fd);
      }
    },
  };
}

/** Images already in memory (the archive reader's `checkpoint/` entries). */
export function memorySource(images: ReadonlyMap<string, { readonly data: Buffer; readonly mtime?: Date }>, label: (name: string) => string): CriuImageSource {
  const list = [...images.keys()].filter((n) => IMAGE_NAME_RE.test(n)).sort();
  return {
    names: () => list,
    has: (name) => images.has(name),
    label,
    mtime: (name) => images.get(name)?.mtime,
    read(name) {
      const im = images.get(name);
      if (!im) throw new ImageError('MISSING', label(name), 'is missing from the archive');
      return im.data;
    },
  };
}
