/**
 * Everything wrong with a checkpoint directory surfaces as an ImageError whose message names
 * the file (and byte offset where it applies) and what is wrong with it.
 */
export type ImageErrorCode = 'TRUNCATED' | 'BAD_MAGIC' | 'CHECKSUM' | 'MISSING' | 'VERSION' | 'INVALID';

export class ImageError extends Error {
  readonly code: ImageErrorCode;
  readonly file: string;
  readonly offset?: number;

  constructor(code: ImageErrorCode, file: string, message: string, offset?: number, options?: { cause?: unknown }) {
    super(`${file}${offset !== undefined ? ` at offset ${offset}` : ''}: ${message}`, options);
    this.name = 'ImageError';
    this.code = code;
    this.file = file;
    if (offset !== undefined) this.offset = offset;
  }
}
