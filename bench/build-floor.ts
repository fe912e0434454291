/**
 * Builds bench/floor.c (the C floor of `vfio-engine bench --kernel linux`, src/bench/floor.ts) on the host, into the checkout's
 * dist/bench/floor: the test VM sees the host's root read-only, so the binary must exist
 * before the VM boots. Compiled against the Linux >= 6.12 uapi headers test/golden/probe.ts
 * finds (VFIO_ENGINE_UAPI_INCLUDE, Debian's linux-source-6.12, or /usr/include when new
 * enough), with the project's own ioctl numbers passed in: floor.c refuses to compile when
 * the headers and src/uapi disagree.
 *
 *   node dist/bench/build-floor.js        prints the binary's path
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  type Ioctl,
} from '../src/uapi/index.js';
import { findHeaders } from '../test/golden/probe.js';
import { FLOOR_BINARY } from '../src/bench/floor.js';

/** The ioctls floor.c issues, as src/uapi declares them. */
export const FLOOR_IOCTLS: readonly Ioctl[] = [
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_SET_IOMMU,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
];

/** The compiler command line for floor.c (without the compiler itself). */
export function floorCompileArgs(source: string, output: string, include: string): string[] {
  return [
    '-O2',
    '-std=gnu11',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-D__user=',
    '-pthread',
    ...FLOOR_IOCTLS.map((io) => `-DPROJECT_${io.name}=0x${io.request.toString(16)}UL`),
    '-I',
    include,
    '-o',
    output,
    source,
  ];
}

/** The checkout: two levels above dist/bench/build-floor.js. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Compiles bench/floor.c into `out` (default dist/bench/floor; env CC, default cc); returns its path. */
export function buildFloor(out: string = FLOOR_BINARY): string {
  const headers = findHeaders();
  if (!headers) {
    throw new Error(
      'no Linux >= 6.12 uapi headers (linux/iommufd.h): install linux-source-6.12 or set VFIO_ENGINE_UAPI_INCLUDE',
    );
  }
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const cc = process.env.CC || 'cc';
  execFileSync(cc, floorCompileArgs(path.join(ROOT, 'bench/floor.c'), out, headers.include), {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return out;
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(buildFloor());
}
