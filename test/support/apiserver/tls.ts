/**
 * Self-signed TLS material for tests (the fake API server, and webhook servers under test).
 * Uses `openssl` when present; otherwise builds the X.509 certificate with node:crypto and a small DER encoder.
 * The certificate is its own CA (basicConstraints CA:TRUE), so clients pass its PEM as the CA bundle.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isIP } from 'node:net';

export interface SelfSignedCert {
  readonly certPem: string;
  readonly keyPem: string;
  /** How it was made. */
  readonly method: 'openssl' | 'node';
}

export interface CertOptions {
  /** DNS names and IP addresses for subjectAltName (default: localhost, 127.0.0.1, ::1). */
  hosts?: readonly string[];
  commonName?: string;
  days?: number;
  /** Force the node:crypto path (tests of the fallback). */
  method?: 'openssl' | 'node';
}

function hasOpenssl(): boolean {
  return spawnSync('openssl', ['version'], { encoding: 'utf8' }).status === 0;
}

export function generateSelfSignedCert(opts: CertOptions = {}): SelfSignedCert {
  const hosts = opts.hosts ?? ['localhost', '127.0.0.1', '::1'];
  const cn = opts.commonName ?? hosts[0] ?? 'localhost';
  const days = opts.days ?? 2;
  const method = opts.method ?? (hasOpenssl() ? 'openssl' : 'node');
  return method === 'openssl' ? viaOpenssl(hosts, cn, days) : viaNode(hosts, cn, days);
}

function viaOpenssl(hosts: readonly string[], cn: string, days: number): SelfSignedCert {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-apiserver-tls-'));
  try {
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const san = hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
    const r = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', String(days), '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,digitalSignature,keyCertSign',
      '-addext', 'extendedKeyUsage=serverAuth,clientAuth',
    ], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl req failed (${r.status}): ${r.stderr}`);
    return { certPem: fs.readFileSync(cert, 'utf8'), keyPem: fs.readFileSync(key, 'utf8'), method: 'openssl' };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------------------ DER

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  while (n > 0) { bytes.unshift(n & 0xff); n >>= 8; }
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
function tlv(tag: number, body: Buffer): Buffer { return Buffer.concat([Buffer.from([tag]), len(body.length), body]); }
const seq = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));
const set = (...parts: Buffer[]) => tlv(0x31, Buffer.concat(parts));
function oid(s: string): Buffer {
  const p = s.split('.').map(Number);
  const out = [40 * p[0]! + p[1]!];
  for (const n of p.slice(2)) {
    const b: number[] = [n & 0x7f];
    let v = Math.floor(n / 128);
    while (v > 0) { b.unshift((v & 0x7f) | 0x80); v = Math.floor(v / 128); }
    out.push(...b);
  }
  return tlv(0x06, Buffer.from(out));
}
function int(b: Buffer): Buffer { return tlv(0x02, b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b); }
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
function time(d: Date): Buffer {
  const s = d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  return tlv(0x17, Buffer.from(s, 'ascii'));
}
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer) => tlv(0x03, Buffer.concat([Buffer.from([0]), b]));
const ctx = (n: number, b: Buffer, constructed = true) => tlv((constructed ? 0xa0 : 0x80) | n, b);

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const tl = tail !== undefined && tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return b;
}

function viaNode(hosts: readonly string[], cn: string, days: number): SelfSignedCert {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const sigAlg = seq(oid('1.2.840.10045.4.3.2')); // ecdsa-with-SHA256
  const name = seq(set(seq(oid('2.5.4.3'), utf8(cn))));
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + days * 86_400_000);
  const sanNames = hosts.map((h) => (isIP(h) ? ctx(7, ipBytes(h), false) : ctx(2, Buffer.from(h, 'ascii'), false)));
  const exts = seq(
    seq(oid('2.5.29.19'), bool(true), octets(seq(bool(true)))), // basicConstraints CA:TRUE
    seq(oid('2.5.29.15'), bool(true), octets(bits(Buffer.from([0x84])))), // keyUsage digitalSignature, keyCertSign
    seq(oid('2.5.29.37'), octets(seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2')))), // serverAuth, clientAuth
    seq(oid('2.5.29.17'), octets(seq(...sanNames))),
    seq(oid('2.5.29.14'), octets(octets(crypto.createHash('sha1').update(spki).digest()))), // subjectKeyIdentifier
  );
  const serial = crypto.randomBytes(16);
  serial[0]! &= 0x7f;
  const tbs = seq(ctx(0, int(Buffer.from([2]))), int(serial), sigAlg, name, seq(time(notBefore), time(notAfter)), name, spki, ctx(3, exts));
  const sig = crypto.sign('sha256', tbs, privateKey);
  const der = seq(tbs, sigAlg, bits(sig));
  const certPem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  return { certPem, keyPem, method: 'node' };
}
