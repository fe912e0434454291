/**
 * The Linux release the simulated kernel answers as. The model is Linux 6.12; where a 6.12
 * stable release changed an answer, the model gives the answer of the release its topology
 * names (Topology.linux), so that it can be compared with the kernel actually booted.
 */

/** The release the simulation models unless told otherwise: what Debian's linux-source-6.12 builds today. */
export const SIMULATED_LINUX = '6.12.118';

/**
 * Answers that changed within 6.12 stable, each with the first release that gives the new
 * answer. The simulation asks {@link linuxAtLeast}(topology.linux, LINUX_CHANGES.x).
 */
export const LINUX_CHANGES = {
  /**
   * IOMMU_HWPT_GET_DIRTY_BITMAP returns what the walk over the range found: the driver's
   * read_and_clear_dirty error (EINVAL while dirty tracking is off) and EINVAL for a range
   * that is not mapped without a hole (bits read before the hole stay written). Up to
   * 6.12.117 iommu_read_and_clear_dirty() dropped both and the ioctl returned 0. Stable
   * 6.12.118: "iommufd/iova_bitmap: Ensure that iova_bitmap_set() handles the full IOVA".
   */
  dirtyBitmapErrors: '6.12.118',
} as const;

/** A release string ("6.12.118", or `uname -r` such as "6.12.118-vfio") as [major, minor, patch]. */
export function parseLinuxRelease(release: string): [number, number, number] {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release.trim());
  if (!m) throw new Error(`not a Linux release: ${JSON.stringify(release)} (expected e.g. 6.12.118)`);
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

/** Whether `release` is `since` or later. */
export function linuxAtLeast(release: string, since: string): boolean {
  const a = parseLinuxRelease(release);
  const b = parseLinuxRelease(since);
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return true;
}
