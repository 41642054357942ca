/** Errors of the dump engine. Parse errors from /proc propagate as ProcParseError (they quote the line). */
export type DumpErrorCode = 'NO_PROCESS' | 'NO_FDINFO_LOCKS' | 'KCMP' | 'PROBE' | 'BAD_OPTIONS';

export class DumpError extends Error {
  readonly code: DumpErrorCode;
  constructor(code: DumpErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DumpError';
    this.code = code;
  }
}
