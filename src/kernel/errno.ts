/** How the simulated kernel fails a call: throw KernelErrno; the dispatcher turns it into -errno. */
import { ERRNO, type ErrnoName } from '../uapi/errno.js';

/** A failed simulated system call. `why` is for debugging only; the caller sees the errno. */
export class KernelErrno extends Error {
  constructor(
    readonly errno: number,
    readonly why = '',
  ) {
    super(why || `errno ${errno}`);
  }
}

/** Fails the current simulated call with `name` (EINVAL, ENOENT, ...). */
export function kfail(name: ErrnoName, why = ''): never {
  throw new KernelErrno(ERRNO[name], why ? `${name}: ${why}` : name);
}
