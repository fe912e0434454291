/**
 * `vfio-engine probe`: what this host's kernel offers the engine, asked through the
 * syscall port: iommufd (an IOAS and its IOVA ranges), the legacy VFIO container
 * (API version, type1v2, unmap-all), IOMMU groups, vfio-pci devices and their cdevs,
 * and the locked-memory limit that bounds how much guest RAM can be pinned.
 */
import os from 'node:os';
import path from 'node:path';
import { SyscallError } from '../port/errors.js';
import { type SyscallPort } from '../port/port.js';
import { O, RLIMIT, RLIM_INFINITY } from '../uapi/libc.js';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  VFIO_API,
  VFIO_CHECK_EXTENSION,
  VFIO_EXTENSION,
  VFIO_GET_API_VERSION,
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
} from '../uapi/index.js';

/** One finding of the probe. */
export interface ProbeLine {
  what: string;
  ok: boolean;
  detail: string;
}

const why = (e: unknown) => (e instanceof SyscallError ? e.message : String(e));

/** Surveys the kernel behind `port`. */
export function probeHost(port: SyscallPort): ProbeLine[] {
  const lines: ProbeLine[] = [
    {
      what: 'kernel',
      ok: true,
      detail:
        port.kind === 'sim'
          ? `simulated Linux 6.12 (in a thread of this process on ${os.release()})`
          : `${os.type()} ${os.release()} ${os.arch()}`,
    },
  ];

  try {
    const fd = port.open('/dev/iommu', O.RDWR | O.CLOEXEC);
    try {
      const a = iommu_ioas_alloc.view().reset();
      port.ioctl(fd, IOMMU_IOAS_ALLOC, a.bytes);
      const r = iommu_ioas_iova_ranges.view().reset();
      r.ioas_id = a.out_ioas_id;
      let ranges = 'unknown';
      try {
        port.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, r.bytes);
        ranges = `${r.num_iovas} range(s), alignment ${r.out_iova_alignment}`;
      } catch (e) {
        // Asked with room for no ranges: EMSGSIZE with num_iovas set is the kernel's answer.
        if (e instanceof SyscallError && e.code === 'EMSGSIZE')
          ranges = `${r.num_iovas} range(s), alignment ${r.out_iova_alignment}`;
        else throw e;
      }
      const d = iommu_destroy.view().reset();
      d.id = a.out_ioas_id;
      port.ioctl(fd, IOMMU_DESTROY, d.bytes);
      lines.push({
        what: 'iommufd (/dev/iommu)',
        ok: true,
        detail: `IOAS ${a.out_ioas_id} allocated and destroyed; ${ranges}`,
      });
    } finally {
      port.close(fd);
    }
  } catch (e) {
    lines.push({ what: 'iommufd (/dev/iommu)', ok: false, detail: why(e) });
  }

  try {
    const fd = port.open('/dev/vfio/vfio', O.RDWR | O.CLOEXEC);
    try {
      const v = port.ioctl(fd, VFIO_GET_API_VERSION);
      const t1v2 = port.ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.TYPE1v2_IOMMU);
      const all = port.ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_EXTENSION.UNMAP_ALL);
      lines.push({
        what: 'legacy VFIO container (/dev/vfio/vfio)',
        ok: v === VFIO_API.API_VERSION && t1v2 === 1,
        detail: `API version ${v}, type1v2 ${t1v2 ? 'yes' : 'no'}, unmap-all ${all ? 'yes' : 'no'}`,
      });
    } finally {
      port.close(fd);
    }
  } catch (e) {
    lines.push({ what: 'legacy VFIO container (/dev/vfio/vfio)', ok: false, detail: why(e) });
  }

  const readdir = (dir: string) => {
    try {
      return port.readdir(dir).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    } catch {
      return [];
    }
  };
  const readlink = (p: string) => {
    try {
      return port.readlink(p);
    } catch {
      return null;
    }
  };
  const groups = readdir('/sys/kernel/iommu_groups');
  lines.push({
    what: 'IOMMU groups',
    ok: groups.length > 0,
    detail: groups.length ? groups.join(' ') : 'none (no IOMMU, or it is off)',
  });

  const vfioPci = readdir('/sys/bus/pci/drivers/vfio-pci').filter((n) => /^[0-9a-f]{4}:/.test(n));
  const devs = vfioPci.map((bdf) => {
    const base = path.join('/sys/bus/pci/drivers/vfio-pci', bdf);
    const group = path.basename(readlink(path.join(base, 'iommu_group')) ?? '?');
    const cdev = readdir(path.join(base, 'vfio-dev'))[0] ?? 'no cdev';
    return `${bdf} (group ${group}, ${cdev})`;
  });
  lines.push({
    what: 'devices bound to vfio-pci',
    ok: devs.length > 0,
    detail: devs.length ? devs.join(', ') : 'none',
  });

  const ml = port.getrlimit(RLIMIT.MEMLOCK);
  const fmt = (v: bigint) => (v === RLIM_INFINITY ? 'unlimited' : `${v / 1024n} KiB`);
  lines.push({ what: 'RLIMIT_MEMLOCK', ok: true, detail: `soft ${fmt(ml.cur)}, hard ${fmt(ml.max)}` });
  return lines;
}
