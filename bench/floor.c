/*
 * The floor of bench/kernel.ts: the same DMA-mapping work as the engine, in C, one ioctl
 * per section with nothing around it. Runs inside the test VM (built on the host by
 * bench/build-floor.ts against the Linux 6.12 uapi headers the project's layouts are
 * checked against; every ioctl number is also checked against src/uapi at compile time).
 *
 *   floor --backend iommufd --device /dev/vfio/devices/vfioN --count N --size BYTES --iova BASE [--fd FD]
 *   floor --backend legacy  --device /dev/vfio/GROUP         --count N --size BYTES --iova BASE [--fd FD]
 *
 * iommufd: open /dev/iommu, IOMMU_IOAS_ALLOC, bind the device's cdev and attach it to the
 * IOAS (so maps pin and fill a real IOMMU domain), then N x IOMMU_IOAS_MAP (FIXED_IOVA,
 * READABLE | WRITEABLE) and N x IOMMU_IOAS_UNMAP. legacy: container + group + VFIO_SET_IOMMU
 * TYPE1v2, then N x VFIO_IOMMU_MAP_DMA (READ | WRITE) and N x VFIO_IOMMU_UNMAP_DMA.
 * Section i is [BASE + i * BYTES, +BYTES) -> memfd offset i * BYTES. The memfd (FD, inherited
 * from the caller, or a new one) is mapped shared and pre-faulted for writing (one write per
 * page, as bench/kernel.ts does for its own mapping) before the clock starts. After the
 * unmaps, an unmap-all must find nothing left.
 *
 * Prints one JSON line: {"backend":...,"count":N,"size":BYTES,"mapNs":...,"unmapNs":...}.
 * Exits 1 on any failed call, naming it, its section and the errno; 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/types.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>

/* The project's numbers (src/uapi), passed by bench/build-floor.ts: the C and the engine must issue the same ioctls. */
#define SAME(name) _Static_assert((unsigned long)(name) == (unsigned long)(PROJECT_##name), #name " differs from src/uapi")
#ifdef PROJECT_IOMMU_IOAS_MAP
SAME(IOMMU_IOAS_ALLOC);
SAME(IOMMU_IOAS_MAP);
SAME(IOMMU_IOAS_UNMAP);
SAME(VFIO_DEVICE_BIND_IOMMUFD);
SAME(VFIO_DEVICE_ATTACH_IOMMUFD_PT);
SAME(VFIO_GROUP_GET_STATUS);
SAME(VFIO_GROUP_SET_CONTAINER);
SAME(VFIO_SET_IOMMU);
SAME(VFIO_IOMMU_MAP_DMA);
SAME(VFIO_IOMMU_UNMAP_DMA);
#endif

static void die(const char *what, long section, uint64_t iova) {
  int e = errno;
  if (section >= 0)
    fprintf(stderr, "floor: %s of section %ld (iova 0x%" PRIx64 "): %s (errno %d)\n", what, section, iova,
            strerror(e), e);
  else
    fprintf(stderr, "floor: %s: %s (errno %d)\n", what, strerror(e), e);
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void usage(void) {
  fprintf(stderr, "usage: floor --backend iommufd|legacy --device PATH --count N --size BYTES --iova BASE [--fd FD]\n");
  exit(2);
}

static uint64_t number(const char *s) {
  char *end;
  errno = 0;
  uint64_t v = strtoull(s, &end, 0);
  if (errno || !*s || *end) usage();
  return v;
}

int main(int argc, char **argv) {
  const char *backend = NULL, *device = NULL;
  uint64_t count = 0, size = 0, base = 0;
  int memfd = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
    else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
    else if (!strcmp(argv[i], "--count")) count = number(argv[i + 1]);
    else if (!strcmp(argv[i], "--size")) size = number(argv[i + 1]);
    else if (!strcmp(argv[i], "--iova")) base = number(argv[i + 1]);
    else if (!strcmp(argv[i], "--fd")) memfd = (int)number(argv[i + 1]);
    else usage();
  }
  if (argc % 2 == 0 || !backend || !device || !count || !size || (size & 4095) || (base & 4095)) usage();
  int iommufd_mode = !strcmp(backend, "iommufd");
  if (!iommufd_mode && strcmp(backend, "legacy")) usage();

  /* Guest RAM: a shared memfd mapping, pre-faulted writable. */
  uint64_t total = count * size;
  if (memfd < 0) {
    memfd = memfd_create("vfio-engine-floor", MFD_CLOEXEC);
    if (memfd < 0) die("memfd_create", -1, 0);
    if (ftruncate(memfd, (off_t)total)) die("ftruncate", -1, 0);
  }
  uint8_t *va = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (va == MAP_FAILED) die("mmap", -1, 0);
  /* A write per page: a pin for writing then finds every PTE present and writable
   * (MAP_POPULATE would fault a shared mapping in read-only). */
  for (uint64_t off = 0; off < total; off += 4096) ((volatile uint8_t *)va)[off] = 0;

  int iommufd = -1, dev = -1, container = -1, group = -1;
  uint32_t ioas = 0;
  if (iommufd_mode) {
    iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    if (iommufd < 0) die("open /dev/iommu", -1, 0);
    struct iommu_ioas_alloc alloc = {.size = sizeof(alloc)};
    if (ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc)) die("IOMMU_IOAS_ALLOC", -1, 0);
    ioas = alloc.out_ioas_id;
    dev = open(device, O_RDWR | O_CLOEXEC);
    if (dev < 0) die(device, -1, 0);
    struct vfio_device_bind_iommufd bind = {.argsz = sizeof(bind), .iommufd = iommufd};
    if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind)) die("VFIO_DEVICE_BIND_IOMMUFD", -1, 0);
    struct vfio_device_attach_iommufd_pt attach = {.argsz = sizeof(attach), .pt_id = ioas};
    if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach)) die("VFIO_DEVICE_ATTACH_IOMMUFD_PT", -1, 0);
  } else {
    container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (container < 0) die("open /dev/vfio/vfio", -1, 0);
    group = open(device, O_RDWR | O_CLOEXEC);
    if (group < 0) die(device, -1, 0);
    struct vfio_group_status status = {.argsz = sizeof(status)};
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &status)) die("VFIO_GROUP_GET_STATUS", -1, 0);
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
      errno = EINVAL;
      die("group not viable", -1, 0);
    }
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) die("VFIO_GROUP_SET_CONTAINER", -1, 0);
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) die("VFIO_SET_IOMMU", -1, 0);
  }

  uint64_t t0 = now_ns();
  if (iommufd_mode) {
    struct iommu_ioas_map m = {.size = sizeof(m), .ioas_id = ioas};
    m.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    for (uint64_t i = 0; i < count; i++) {
      m.user_va = (uintptr_t)(va + i * size);
      m.length = size;
      m.iova = base + i * size;
      if (ioctl(iommufd, IOMMU_IOAS_MAP, &m)) die("IOMMU_IOAS_MAP", (long)i, m.iova);
    }
  } else {
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m)};
    m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    for (uint64_t i = 0; i < count; i++) {
      m.vaddr = (uintptr_t)(va + i * size);
      m.size = size;
      m.iova = base + i * size;
      if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m)) die("VFIO_IOMMU_MAP_DMA", (long)i, m.iova);
    }
  }
  uint64_t t1 = now_ns();
  if (iommufd_mode) {
    struct iommu_ioas_unmap u = {.size = sizeof(u), .ioas_id = ioas};
    for (uint64_t i = 0; i < count; i++) {
      u.iova = base + i * size;
      u.length = size;
      if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &u)) die("IOMMU_IOAS_UNMAP", (long)i, u.iova);
      if (u.length != size) {
        errno = EIO;
        die("IOMMU_IOAS_UNMAP unmapped a different length", (long)i, u.iova);
      }
    }
  } else {
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u)};
    for (uint64_t i = 0; i < count; i++) {
      u.iova = base + i * size;
      u.size = size;
      if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u)) die("VFIO_IOMMU_UNMAP_DMA", (long)i, u.iova);
      if (u.size != size) {
        errno = EIO;
        die("VFIO_IOMMU_UNMAP_DMA unmapped a different size", (long)i, u.iova);
      }
    }
  }
  uint64_t t2 = now_ns();

  /* Nothing may be left mapped. */
  if (iommufd_mode) {
    struct iommu_ioas_unmap all = {.size = sizeof(all), .ioas_id = ioas, .iova = 0, .length = UINT64_MAX};
    int rc = ioctl(iommufd, IOMMU_IOAS_UNMAP, &all); /* ENOENT or 0 bytes: nothing was left */
    if (rc && errno != ENOENT) die("IOMMU_IOAS_UNMAP (all)", -1, 0);
    if (!rc && all.length != 0) {
      errno = EIO;
      die("mappings left after the unmaps", -1, 0);
    }
    close(dev);
    close(iommufd);
  } else {
    struct vfio_iommu_type1_dma_unmap all = {.argsz = sizeof(all), .flags = VFIO_DMA_UNMAP_FLAG_ALL};
    if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &all)) die("VFIO_IOMMU_UNMAP_DMA (all)", -1, 0);
    if (all.size != 0) {
      errno = EIO;
      die("mappings left after the unmaps", -1, 0);
    }
    close(group);
    close(container);
  }
  munmap(va, total);
  printf("{\"backend\":\"%s\",\"count\":%" PRIu64 ",\"size\":%" PRIu64 ",\"mapNs\":%" PRIu64 ",\"unmapNs\":%" PRIu64 "}\n",
         backend, count, size, t1 - t0, t2 - t1);
  return 0;
}
