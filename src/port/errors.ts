/**
 * The typed error every failed system call becomes: it names the operation, the errno
 * (number and name) and the key fields of the request, so that a failed IOMMU_IOAS_MAP
 * says which IOAS, which range and why.
 */
import { errnoMessage, errnoName } from '../uapi/errno.js';
import type { Ioctl } from '../uapi/layout.js';

/** The request fields an error carries (ids, flags, IOVAs, lengths, paths). */
export type ErrorFields = Readonly<Record<string, number | bigint | string>>;

/** A system call that failed with an errno. */
export class SyscallError extends Error {
  override readonly name = 'SyscallError';
  /** What failed: an ioctl name (IOMMU_IOAS_MAP) or a libc call (open, mmap). */
  readonly op: string;
  /** The errno number. */
  readonly errno: number;
  /** The errno name: EEXIST, ENOENT, ... */
  readonly code: string;
  /** Key fields of the request. */
  readonly fields: ErrorFields;

  constructor(op: string, errno: number, fields: ErrorFields = {}) {
    super(`${op} failed: ${errnoName(errno)} (${errnoMessage(errno)})${formatFields(fields)}`);
    this.op = op;
    this.errno = errno;
    this.code = errnoName(errno);
    this.fields = fields;
  }

  /** A structured-clone-safe form: worker threads return this, the caller rebuilds the error. */
  toJSON(): SerializedSyscallError {
    return { kind: 'SyscallError', op: this.op, errno: this.errno, fields: { ...this.fields } };
  }

  /** Rebuilds an error sent across a thread boundary. */
  static fromJSON(s: SerializedSyscallError): SyscallError {
    return new SyscallError(s.op, s.errno, s.fields);
  }
}

/** SyscallError as plain data (bigint survives structured clone). */
export interface SerializedSyscallError {
  kind: 'SyscallError';
  op: string;
  errno: number;
  fields: Record<string, number | bigint | string>;
}

// Addresses, IOVAs and lengths read best in hex; ids, counts and fds in decimal.
const DECIMAL =
  /(^|_)(id|fd|ioas_id|hwpt_id|dev_id|pt_id|index|count|num_iovas|op|option_id|iommufd|devid|group|argsz)$/;

function formatFields(fields: ErrorFields): string {
  const parts = Object.entries(fields).map(([k, v]) => {
    if (typeof v === 'string') return `${k}=${JSON.stringify(v)}`;
    if (typeof v === 'bigint' || (!DECIMAL.test(k) && v > 9)) return `${k}=0x${v.toString(16)}`;
    return `${k}=${v}`;
  });
  return parts.length ? ` [${parts.join(' ')}]` : '';
}

/** The fields of a failed ioctl request that its declaration names (read only on the error path). */
export function requestFields(
  fd: number,
  req: Ioctl,
  arg: Uint8Array | number | string | undefined,
): ErrorFields {
  const out: Record<string, number | bigint | string> = { fd };
  if (req.arg.kind === 'struct' && arg instanceof Uint8Array && arg.byteLength >= req.arg.struct.size) {
    const all = req.arg.struct.decode(arg);
    for (const k of req.keyFields) if (k in all) out[k] = all[k]!;
  } else if (typeof arg === 'number' || typeof arg === 'string') {
    out.arg = arg;
  }
  return out;
}
