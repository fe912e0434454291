/**
 * The simulated host: its IOMMU and the PCI devices bound to vfio-pci, described as JSON.
 * The default needs no setup and covers the cases the engine must handle: devices in
 * groups of their own, a pair sharing a group, a device without a VFIO cdev (so that
 * iommufd=auto falls back to the legacy backend), and one with device DMA logging.
 */
import fs from 'node:fs';
import { parseLinuxRelease, SIMULATED_LINUX } from './release.js';

/** The IOMMU the devices sit behind (what QEMU's intel-iommu gives the test VM, by default). */
export interface IommuSpec {
  /** Highest IOVA the domain can translate (aperture end, inclusive): 2^aw_bits - 1. */
  aperture_last: bigint;
  /** IOVA ranges the IOMMU reserves (MSI window), inclusive. */
  reserved: Array<[bigint, bigint]>;
  /** Page sizes the domain supports (bitmap; the smallest gives the IOVA alignment). */
  pgsize_bitmap: bigint;
  /** Whether the IOMMU supports dirty tracking (IOMMU_HW_CAP_DIRTY_TRACKING). */
  dirty_tracking: boolean;
  /**
   * IOMMU_GET_HW_INFO data type, which also names the driver the simulation models: 1 =
   * Intel VT-d (intel-iommu); 0 = NONE, an IOMMU driver without hw_info, modelled as
   * virtio-iommu (no domain_alloc_user, a domain's geometry set at its first attach).
   */
  hw_info_type: number;
  /** VT-d capability and extended capability registers reported by GET_HW_INFO (0 when not VT-d). */
  cap_reg: bigint;
  ecap_reg: bigint;
}

/** A PCI device bound to vfio-pci. */
export interface DeviceSpec {
  /** PCI address, e.g. 0000:00:03.0. */
  bdf: string;
  /** Behaviour: 'edu' does DMA like QEMU's edu device; 'generic' is config space and a BAR only. */
  model: 'edu' | 'generic';
  vendor: number;
  device: number;
  /** IOMMU group number (/dev/vfio/<group>). */
  group: number;
  /** The VFIO cdev name (vfioN), or null when the device has none (no CONFIG_VFIO_DEVICE_CDEV path). */
  cdev: string | null;
  /** BAR sizes in bytes (index 0..5); 0 = no BAR. */
  bars: number[];
  /** Function-level reset available (VFIO_DEVICE_FLAGS_RESET). */
  reset: boolean;
  /** Devices on the same bus reset (hot reset) together; devices with the same key share a reset. */
  reset_domain: string;
  /** Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*), as migration-capable VFs have. */
  dma_logging: boolean;
}

/** The whole simulated host. */
export interface Topology {
  iommu: IommuSpec;
  devices: DeviceSpec[];
  /** vfio_iommu_type1.dma_entry_limit: mappings per legacy container. */
  dma_entry_limit: number;
  /** RLIMIT_MEMLOCK of the simulated process, bytes (soft = hard). */
  memlock: bigint;
  /**
   * The Linux 6.12 stable release whose answers the simulation gives where they differ
   * between releases (src/kernel/release.ts), e.g. "6.12.118".
   */
  linux: string;
}

const MiB = 1 << 20;

/** QEMU's intel-iommu in the test VM: 39-bit address width, MSI window reserved, 4K/2M/1G pages, no scalable mode. */
export const VTD_IOMMU: IommuSpec = {
  aperture_last: (1n << 39n) - 1n,
  reserved: [[0xfee0_0000n, 0xfeef_ffffn]],
  pgsize_bitmap: 0x4020_1000n,
  dirty_tracking: false,
  hw_info_type: 1,
  // As QEMU 7.2's intel-iommu reports them in the test VM (read there by uapi-iommufd-vtd.spec.ts).
  cap_reg: 0x00d2_008c_2226_0206n,
  ecap_reg: 0x0000_0000_00f0_0f4an,
};

/**
 * QEMU 7.2's virtio-iommu-pci in the test VM's virtio variant: its input range is all of
 * 64-bit space (VIRTIO_IOMMU_F_INPUT_RANGE [0, 2^64 - 1]), page_size_mask ~0xfff (every page
 * size from 4 KiB up), the x86 MSI window declared as a reserved MSI region (probe), no
 * dirty tracking, no GET_HW_INFO data and no VT-d registers (so no snoop control:
 * VFIO_DMA_CC_IOMMU is 0).
 */
export const VIRTIO_IOMMU: IommuSpec = {
  aperture_last: (1n << 64n) - 1n,
  reserved: [[0xfee0_0000n, 0xfeef_ffffn]],
  pgsize_bitmap: 0xffff_ffff_ffff_f000n,
  dirty_tracking: false,
  hw_info_type: 0,
  cap_reg: 0n,
  ecap_reg: 0n,
};

/** The IOMMU the test VM emulates (vm/run.ts --iommu): QEMU's intel-iommu or virtio-iommu-pci. */
export type TestVmIommu = 'vtd' | 'virtio';

function copyIommu(spec: IommuSpec): IommuSpec {
  return { ...spec, reserved: spec.reserved.map(([a, b]) => [a, b]) };
}

function edu(bdf: string, group: number, cdev: string | null): DeviceSpec {
  return {
    bdf,
    model: 'edu',
    vendor: 0x1234,
    device: 0x11e8,
    group,
    cdev,
    bars: [MiB, 0, 0, 0, 0, 0],
    reset: false,
    reset_domain: bdf,
    dma_logging: false,
  };
}

/** The default simulated host. */
export function defaultTopology(): Topology {
  return {
    iommu: copyIommu(VTD_IOMMU),
    devices: [
      edu('0000:00:03.0', 1, 'vfio0'),
      edu('0000:00:04.0', 2, 'vfio1'),
      // A two-function device without ACS: both functions share one IOMMU group and one reset.
      { ...generic('0000:00:05.0', 3, 'vfio2'), reset_domain: 'bus0-slot5' },
      { ...generic('0000:00:05.1', 3, 'vfio3'), reset_domain: 'bus0-slot5' },
      // Bound to vfio-pci but without a cdev: iommufd=auto must fall back to the legacy container.
      edu('0000:00:06.0', 4, null),
      // A migration-capable function with device DMA logging.
      { ...generic('0000:00:07.0', 5, 'vfio4'), dma_logging: true, reset: true },
    ],
    dma_entry_limit: 65535,
    memlock: 64n << 30n,
    linux: SIMULATED_LINUX,
  };
}

/**
 * The test VM's host (vm/run.ts) as the simulation: two edu devices, each alone on the
 * secondary bus of its own PCIe root port (so a bus reset resets it alone), each in its own
 * IOMMU group with a cdev: 0000:01:00.0 → group 5, vfio0; 0000:02:00.0 → group 6, vfio1.
 * `iommu` picks the VM's variant: VT-d (the default) or virtio-iommu ({@link VIRTIO_IOMMU};
 * the selftest's mock IOMMU then serves MOCK_DOMAIN, as in that VM). The kernel suites run
 * unchanged on either. `linux` is the release the VM boots (default {@link SIMULATED_LINUX}).
 */
export function testVmTopology(iommu: TestVmIommu = 'vtd', linux: string = SIMULATED_LINUX): Topology {
  const d = defaultTopology();
  const behindRootPort = (bdf: string, group: number, cdev: string): DeviceSpec => ({
    ...edu(bdf, group, cdev),
    reset: true,
  });
  return {
    ...d,
    iommu: iommu === 'virtio' ? copyIommu(VIRTIO_IOMMU) : d.iommu,
    devices: [behindRootPort('0000:01:00.0', 5, 'vfio0'), behindRootPort('0000:02:00.0', 6, 'vfio1')],
    linux: checkedRelease(linux),
  };
}

function generic(bdf: string, group: number, cdev: string | null): DeviceSpec {
  return {
    bdf,
    model: 'generic',
    vendor: 0x8086,
    device: 0x10d3,
    group,
    cdev,
    bars: [128 * 1024, 0, 0, 16 * 1024, 0, 0],
    reset: true,
    reset_domain: bdf,
    dma_logging: false,
  };
}

// A release the model can compare: it must parse (parseLinuxRelease throws, naming it).
function checkedRelease(release: string): string {
  parseLinuxRelease(release);
  return release;
}

/** Reads a topology JSON file: bigint fields may be given as numbers or "0x..." strings. */
export function loadTopology(file: string): Topology {
  return parseTopology(JSON.parse(fs.readFileSync(file, 'utf8')));
}

/** Builds a topology from parsed JSON; fields left out take the default's values. */
export function parseTopology(json: unknown): Topology {
  const d = defaultTopology();
  const j = (json ?? {}) as Partial<Record<keyof Topology, unknown>>;
  const big = (v: unknown, fallback: bigint) => (v === undefined ? fallback : BigInt(v as string | number));
  const io = (j.iommu ?? {}) as Record<string, unknown>;
  const iommu: IommuSpec = {
    aperture_last: big(io.aperture_last, d.iommu.aperture_last),
    reserved: Array.isArray(io.reserved)
      ? (io.reserved as unknown[][]).map(
          ([a, b]) => [BigInt(a as string), BigInt(b as string)] as [bigint, bigint],
        )
      : d.iommu.reserved,
    pgsize_bitmap: big(io.pgsize_bitmap, d.iommu.pgsize_bitmap),
    dirty_tracking: (io.dirty_tracking as boolean | undefined) ?? d.iommu.dirty_tracking,
    hw_info_type: (io.hw_info_type as number | undefined) ?? d.iommu.hw_info_type,
    cap_reg: big(io.cap_reg, d.iommu.cap_reg),
    ecap_reg: big(io.ecap_reg, d.iommu.ecap_reg),
  };
  const devices = Array.isArray(j.devices)
    ? (j.devices as Array<Partial<DeviceSpec> & { bdf: string; group: number }>).map((x) => ({
        ...(x.model === 'generic' ? generic(x.bdf, x.group, null) : edu(x.bdf, x.group, null)),
        ...x,
        cdev: x.cdev === undefined ? null : x.cdev,
      }))
    : d.devices;
  return {
    iommu,
    devices,
    dma_entry_limit: (j.dma_entry_limit as number | undefined) ?? d.dma_entry_limit,
    memlock: big(j.memlock, d.memlock),
    linux: j.linux === undefined ? d.linux : checkedRelease(String(j.linux)),
  };
}
