/**
 * Linux errno numbers (asm-generic/errno-base.h and errno.h, the same on x86-64 and
 * aarch64) for the answers the kernel gives the engine, with their strerror text.
 * One table: the Linux port names the errno it read, the simulated kernel answers
 * with these numbers, and errors print the same text for both.
 */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ELOOP: 40,
  EBADE: 52,
  EOVERFLOW: 75,
  EBADFD: 77,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
} as const;

/** An errno name known to the engine. */
export type ErrnoName = keyof typeof ERRNO;

const MESSAGES: Record<ErrnoName, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  ESRCH: 'No such process',
  EINTR: 'Interrupted system call',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  E2BIG: 'Argument list too long',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EFAULT: 'Bad address',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  EXDEV: 'Invalid cross-device link',
  ENODEV: 'No such device',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  ENFILE: 'Too many open files in system',
  EMFILE: 'Too many open files',
  ENOTTY: 'Inappropriate ioctl for device',
  EFBIG: 'File too large',
  ENOSPC: 'No space left on device',
  ESPIPE: 'Illegal seek',
  EROFS: 'Read-only file system',
  ERANGE: 'Numerical result out of range',
  EDEADLK: 'Resource deadlock avoided',
  ENAMETOOLONG: 'File name too long',
  ENOSYS: 'Function not implemented',
  ELOOP: 'Too many levels of symbolic links',
  EBADE: 'Invalid exchange',
  EOVERFLOW: 'Value too large for defined data type',
  EBADFD: 'File descriptor in bad state',
  EMSGSIZE: 'Message too long',
  EOPNOTSUPP: 'Operation not supported',
  EADDRINUSE: 'Address already in use',
  ETIMEDOUT: 'Connection timed out',
};

const BY_NUMBER = new Map<number, ErrnoName>(
  Object.entries(ERRNO).map(([name, n]) => [n, name as ErrnoName]),
);

/** The symbolic name of an errno number ("EEXIST"), or "E<n>" when unknown. */
export function errnoName(errno: number): string {
  return BY_NUMBER.get(errno) ?? `E${errno}`;
}

/** The strerror() text of an errno number. */
export function errnoMessage(errno: number): string {
  const name = BY_NUMBER.get(errno);
  return name ? MESSAGES[name] : `Unknown error ${errno}`;
}
