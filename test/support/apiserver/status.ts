/**
 * metav1.Status errors shaped exactly like kube-apiserver's (k8s.io/apimachinery/pkg/api/errors),
 * plus field.Error formatting (k8s.io/apimachinery/pkg/util/validation/field) used by 422 Invalid.
 */

export interface GroupResource { readonly group: string; readonly resource: string }
export interface GroupKind { readonly group: string; readonly kind: string }

export interface StatusCause { reason?: string; message: string; field?: string }
export interface StatusDetails {
  name?: string; group?: string; kind?: string; uid?: string; causes?: StatusCause[]; retryAfterSeconds?: number;
}

/** A typed error that becomes a `Status` response body. */
export class ApiStatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
    this.name = 'ApiStatusError';
  }

  toStatus(): Record<string, unknown> {
    return statusBody(this.code, this.reason, this.message, this.details);
  }
}

export function statusBody(code: number, reason: string, message: string, details?: StatusDetails): Record<string, unknown> {
  const s: Record<string, unknown> = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message };
  if (reason) s.reason = reason;
  if (details && Object.keys(details).length > 0) s.details = details;
  s.code = code;
  return s;
}

export function successStatus(details?: StatusDetails): Record<string, unknown> {
  const s: Record<string, unknown> = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' };
  if (details) s.details = details;
  return s;
}

/** `pods` or `lockcheckpoints.lockmig.dev` (schema.GroupResource.String()). */
export function qualifiedResource(gr: GroupResource): string {
  return gr.group ? `${gr.resource}.${gr.group}` : gr.resource;
}

/** `Pod` or `LockCheckpoint.lockmig.dev` (schema.GroupKind.String()). */
export function qualifiedKind(gk: GroupKind): string {
  return gk.group ? `${gk.kind}.${gk.group}` : gk.kind;
}

function grDetails(gr: GroupResource, name: string): StatusDetails {
  const d: StatusDetails = { name };
  if (gr.group) d.group = gr.group;
  d.kind = gr.resource;
  return d;
}

export function notFound(gr: GroupResource, name: string): ApiStatusError {
  return new ApiStatusError(404, 'NotFound', `${qualifiedResource(gr)} "${name}" not found`, grDetails(gr, name));
}

export function alreadyExists(gr: GroupResource, name: string): ApiStatusError {
  return new ApiStatusError(409, 'AlreadyExists', `${qualifiedResource(gr)} "${name}" already exists`, grDetails(gr, name));
}

export const OPTIMISTIC_LOCK_MSG = 'the object has been modified; please apply your changes to the latest version and try again';

export function conflict(gr: GroupResource, name: string, why: string = OPTIMISTIC_LOCK_MSG): ApiStatusError {
  return new ApiStatusError(409, 'Conflict', `Operation cannot be fulfilled on ${qualifiedResource(gr)} "${name}": ${why}`,
    grDetails(gr, name));
}

export function badRequest(message: string): ApiStatusError {
  return new ApiStatusError(400, 'BadRequest', message);
}

export function methodNotAllowed(verb: string, gr: GroupResource): ApiStatusError {
  return new ApiStatusError(405, 'MethodNotAllowed', `${verb} is not supported on resources of kind "${qualifiedResource(gr)}"`,
    { group: gr.group || undefined, kind: gr.resource });
}

export function unsupportedMediaType(contentType: string, accepted: readonly string[]): ApiStatusError {
  return new ApiStatusError(415, 'UnsupportedMediaType',
    `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`,
    contentType ? undefined : undefined);
}

export function gone(message: string): ApiStatusError {
  return new ApiStatusError(410, 'Expired', message);
}

export function internalError(message: string): ApiStatusError {
  return new ApiStatusError(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ message }] });
}

export function unauthorized(): ApiStatusError {
  return new ApiStatusError(401, 'Unauthorized', 'Unauthorized');
}

// ---------------------------------------------------------------------------------------------
// field.Error

export type FieldErrorType =
  | 'FieldValueNotFound' | 'FieldValueRequired' | 'FieldValueDuplicate' | 'FieldValueInvalid'
  | 'FieldValueNotSupported' | 'FieldValueForbidden' | 'FieldValueTooLong' | 'FieldValueTooMany'
  | 'InternalError' | 'FieldValueTypeInvalid';

const TYPE_TEXT: Record<FieldErrorType, string> = {
  FieldValueNotFound: 'Not found',
  FieldValueRequired: 'Required value',
  FieldValueDuplicate: 'Duplicate value',
  FieldValueInvalid: 'Invalid value',
  FieldValueNotSupported: 'Unsupported value',
  FieldValueForbidden: 'Forbidden',
  FieldValueTooLong: 'Too long',
  FieldValueTooMany: 'Too many',
  InternalError: 'Internal error',
  FieldValueTypeInvalid: 'Invalid value',
};

/** Types whose ErrorBody omits the bad value (field.Error.ErrorBody). */
const OMIT_VALUE = new Set<FieldErrorType>(['FieldValueRequired', 'FieldValueForbidden', 'FieldValueTooLong', 'InternalError']);

export interface FieldError { readonly type: FieldErrorType; readonly field: string; readonly value?: unknown; readonly detail?: string }

/** A value printed verbatim in a field error (upstream prints some Go values unquoted, e.g. `0x0`). */
export class RawValue {
  constructor(readonly text: string) {}
}

/** How field.Error prints a bad value: strings quoted, numbers bare, composite values by type name. */
export function formatValue(v: unknown): string {
  if (v instanceof RawValue) return v.text;
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return '"array"';
  return '"object"';
}

export function fieldErrorBody(e: FieldError): string {
  let s = TYPE_TEXT[e.type];
  if (!OMIT_VALUE.has(e.type)) s += `: ${formatValue(e.value)}`;
  if (e.detail) s += `: ${e.detail}`;
  return s;
}

export function fieldErrorString(e: FieldError): string {
  return e.field ? `${e.field}: ${fieldErrorBody(e)}` : fieldErrorBody(e);
}

export const fieldErr = {
  required: (field: string, detail = ''): FieldError => ({ type: 'FieldValueRequired', field, detail }),
  invalid: (field: string, value: unknown, detail = ''): FieldError => ({ type: 'FieldValueInvalid', field, value, detail }),
  typeInvalid: (field: string, value: unknown, detail = ''): FieldError => ({ type: 'FieldValueTypeInvalid', field, value, detail }),
  notSupported: (field: string, value: unknown, supported: readonly unknown[]): FieldError => ({
    type: 'FieldValueNotSupported', field, value,
    detail: supported.length ? `supported values: ${supported.map((x) => (typeof x === 'string' ? JSON.stringify(x) : String(x))).join(', ')}` : '',
  }),
  forbidden: (field: string, detail: string): FieldError => ({ type: 'FieldValueForbidden', field, detail }),
  duplicate: (field: string, value: unknown): FieldError => ({ type: 'FieldValueDuplicate', field, value }),
  tooLong: (field: string, max: number): FieldError => ({ type: 'FieldValueTooLong', field, detail: `may not be more than ${max} bytes` }),
  tooMany: (field: string, actual: number, max: number): FieldError => ({
    type: 'FieldValueTooMany', field, value: actual, detail: `must have at most ${max} items`,
  }),
};

/** 422 Invalid: `Kind.group "name" is invalid: [a, b]` with one cause per field error. */
export function invalid(gk: GroupKind, name: string, errs: readonly FieldError[]): ApiStatusError {
  const list = errs.map(fieldErrorString);
  const msg = `${qualifiedKind(gk)} "${name}" is invalid: ${list.length === 1 ? list[0] : `[${list.join(', ')}]`}`;
  const details: StatusDetails = { name };
  if (gk.group) details.group = gk.group;
  details.kind = gk.kind;
  details.causes = errs.map((e) => ({ reason: e.type, message: fieldErrorBody(e), field: e.field }));
  return new ApiStatusError(422, 'Invalid', msg, details);
}
