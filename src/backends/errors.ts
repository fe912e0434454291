/**
 * VfioError: the engine's typed error. A failed container or device operation names what
 * the engine was doing (dma_map, attach_device, IOMMU_IOAS_MAP), the device, the IOVA
 * range, where it happened (which IOAS or container) and the errno, and keeps the
 * SyscallError it came from as `cause`.
 */
import { SyscallError, type SerializedSyscallError } from '../port/errors.js';
import { errnoMessage, errnoName } from '../uapi/errno.js';

/** What a VfioError is made from. */
export interface VfioErrorInit {
  /** The engine operation (dma_map, attach_device) or the ioctl (IOMMU_IOAS_MAP). */
  op: string;
  /** PCI address of the device concerned. */
  device?: string;
  /** Start of the IOVA range concerned. */
  iova?: bigint;
  /** Length of the IOVA range concerned. */
  size?: bigint;
  /** Where: "iommufd IOAS 2", "legacy container fd 7". */
  target?: string;
  /** Why, in words, when the errno alone does not say it (or there is no errno). */
  detail?: string;
  /** The errno; taken from `cause` when it is a SyscallError. */
  errno?: number;
  /** The failed system call (or other error) behind this one. */
  cause?: unknown;
}

/** An engine operation that failed. */
export class VfioError extends Error {
  override readonly name = 'VfioError';
  /** The engine operation or ioctl that failed. */
  readonly op: string;
  /** PCI address of the device concerned. */
  readonly device: string | undefined;
  /** Start of the IOVA range concerned. */
  readonly iova: bigint | undefined;
  /** Length of the IOVA range concerned. */
  readonly size: bigint | undefined;
  /** Where it failed ("iommufd IOAS 2"). */
  readonly target: string | undefined;
  /** Why, in words. */
  readonly detail: string | undefined;
  /** The errno, when a system call answered one. */
  readonly errno: number | undefined;
  /** The errno name ('EEXIST'), when there is an errno. */
  readonly code: string | undefined;

  constructor(init: VfioErrorInit) {
    const errno = init.errno ?? (init.cause instanceof SyscallError ? init.cause.errno : undefined);
    super(formatMessage(init, errno), init.cause === undefined ? undefined : { cause: init.cause });
    this.op = init.op;
    this.device = init.device;
    this.iova = init.iova;
    this.size = init.size;
    this.target = init.target;
    this.detail = init.detail;
    this.errno = errno;
    this.code = errno === undefined ? undefined : errnoName(errno);
  }

  /** A structured-clone-safe form (worker threads return this; the caller rebuilds the error). */
  toJSON(): SerializedVfioError {
    const c = this.cause;
    return {
      kind: 'VfioError',
      op: this.op,
      device: this.device,
      iova: this.iova,
      size: this.size,
      target: this.target,
      detail: this.detail,
      errno: this.errno,
      cause:
        c instanceof SyscallError
          ? c.toJSON()
          : c instanceof VfioError
            ? c.toJSON()
            : c instanceof Error
              ? c.message
              : undefined,
    };
  }

  /** Rebuilds an error sent across a thread boundary. */
  static fromJSON(s: SerializedVfioError): VfioError {
    const c = s.cause;
    const cause =
      c === undefined
        ? undefined
        : typeof c === 'string'
          ? new Error(c)
          : c.kind === 'SyscallError'
            ? SyscallError.fromJSON(c)
            : VfioError.fromJSON(c);
    return new VfioError({ ...s, cause });
  }

  /** Wraps `e` (a SyscallError, or anything thrown) with the engine's context; a VfioError passes through. */
  static wrap(e: unknown, init: Omit<VfioErrorInit, 'cause'>): VfioError {
    if (e instanceof VfioError) return e;
    return new VfioError({ ...init, cause: e });
  }
}

/** VfioError as plain data (bigint survives structured clone). */
export interface SerializedVfioError {
  kind: 'VfioError';
  op: string;
  device: string | undefined;
  iova: bigint | undefined;
  size: bigint | undefined;
  target: string | undefined;
  detail: string | undefined;
  errno: number | undefined;
  cause: SerializedSyscallError | SerializedVfioError | string | undefined;
}

/** "[0x100000, +0x200000)": an IOVA range as the engine prints it. */
export function formatRange(iova: bigint, size: bigint): string {
  return `[0x${iova.toString(16)}, +0x${size.toString(16)})`;
}

function formatMessage(init: VfioErrorInit, errno: number | undefined): string {
  let s = init.op;
  if (init.device) s += ` ${init.device}`;
  if (init.iova !== undefined && init.size !== undefined) s += ` ${formatRange(init.iova, init.size)}`;
  else if (init.iova !== undefined) s += ` at 0x${init.iova.toString(16)}`;
  if (init.target) s += ` on ${init.target}`;
  const why: string[] = [];
  if (errno !== undefined) why.push(`${errnoName(errno)} (${errnoMessage(errno)})`);
  if (init.detail) why.push(init.detail);
  else if (errno === undefined && init.cause instanceof Error) why.push(init.cause.message);
  return why.length ? `${s}: ${why.join(': ')}` : s;
}
