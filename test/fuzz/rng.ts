/**
 * A small seeded PRNG for the fuzzers: every case is derived from (seed, index) alone, so any
 * single case can be regenerated without running the ones before it (replay of a saved failure).
 *
 * Generator: sfc32 (Chris Doty-Humphrey's Small Fast Counting generator, 128-bit state), seeded
 * by hashing the seed string and the index with a 32-bit FNV-1a / murmur3 finaliser mix.
 */

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hashSeed(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return mix32(h);
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** `seed` is any string (printed by the harness); `index` selects the case. */
  constructor(seed: string, index = 0) {
    const h = hashSeed(seed);
    this.a = mix32(h ^ 0x9e3779b9);
    this.b = mix32(h + index * 0x632be5ab);
    this.c = mix32(index ^ 0x85ebca6b ^ h);
    this.d = 1;
    for (let i = 0; i < 15; i++) this.u32();
  }

  /** uniform 32-bit unsigned integer */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** [0, 1) */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** integer in [lo, hi] (inclusive), for ranges up to 2^53 */
  int(lo: number, hi: number): number {
    if (hi < lo) throw new Error(`Rng.int: empty range ${lo}..${hi}`);
    const span = hi - lo + 1;
    if (span <= 4294967296) return lo + Math.floor(this.float() * span);
    return lo + Math.floor((this.u32() * 4294967296 + this.u32()) / 2 ** 64 * span);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('Rng.pick: empty list');
    return xs[this.int(0, xs.length - 1)]!;
  }

  /** pick by weight: [[weight, value], …] */
  weighted<T>(xs: readonly (readonly [number, T])[]): T {
    const total = xs.reduce((s, [w]) => s + w, 0);
    let r = this.float() * total;
    for (const [w, v] of xs) {
      if (r < w) return v;
      r -= w;
    }
    return xs[xs.length - 1]![1];
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** uniform bigint of `bits` random bits (unsigned) */
  bigBits(bits: number): bigint {
    let v = 0n;
    for (let i = 0; i < bits; i += 32) v = (v << 32n) | BigInt(this.u32());
    return v & ((1n << BigInt(bits)) - 1n);
  }

  shuffle<T>(xs: readonly T[]): T[] {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

/** A fresh seed for a run that was not given one (printed, so the run can be repeated). */
export function newSeed(): string {
  return `${Date.now().toString(36)}-${Math.floor(Math.random() * 0xffffffff).toString(36)}`;
}
