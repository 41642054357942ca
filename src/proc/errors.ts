/**
 * Errors raised while reading /proc. A parse error always quotes the offending line and
 * says where it came from, so a kernel format change is diagnosable from the message alone.
 */
export class ProcParseError extends Error {
  /** the /proc file (or fixture) being parsed */
  readonly source: string;
  /** 1-based line number within `source` */
  readonly lineNo: number;
  readonly line: string;

  constructor(source: string, lineNo: number, line: string, why: string) {
    super(`${source}:${lineNo}: ${why}: ${JSON.stringify(line)}`);
    this.name = 'ProcParseError';
    this.source = source;
    this.lineNo = lineNo;
    this.line = line;
  }
}
