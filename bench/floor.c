/*
 * The C floor of `vfio-engine bench --kernel linux`: the same DMA-mapping work as the engine,
 * in C, one ioctl per section with nothing around it, on one thread or on N. Runs inside the
 * test VM (built on the host by bench/build-floor.ts against the Linux 6.12 uapi headers the
 * project's layouts are checked against; every ioctl number is also checked against src/uapi
 * at compile time).
 *
 *   floor --backend iommufd|legacy --device PATH --ram BYTES --backing memfd|thp|hugetlb
 *         [--fd FD] [--threads N]  < sections
 *
 * sections: one per line, "IOVA SIZE OFFSET [ro]" (decimal or 0x hex), OFFSET into guest RAM;
 * "ro" maps the section read-only (a ROM), as the engine does. Or an op list, run in order on
 * one thread: "map IOVA SIZE OFFSET [ro]" and "unmap IOVA SIZE" lines, timed from a "start"
 * line (else from the first) to a "stop" line (else to the last); it must leave nothing mapped.
 * Guest RAM: memfd and hugetlb map FD (inherited from the caller, so the floor pins the very
 * pages the engine pins) or a new memfd of BYTES, shared; thp is a new private anonymous
 * mapping of BYTES with MADV_HUGEPAGE. Every page is written once before the clock starts
 * (a pin for writing then finds every PTE present and writable).
 *
 * iommufd: open /dev/iommu, IOMMU_IOAS_ALLOC, bind the device's cdev and attach it to the
 * IOAS (so maps pin and fill a real IOMMU domain), then every section IOMMU_IOAS_MAP
 * (FIXED_IOVA, READABLE | WRITEABLE), then every section IOMMU_IOAS_UNMAP. legacy:
 * container + group + VFIO_SET_IOMMU TYPE1v2, VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA.
 * With N threads the sections are cut into N contiguous lanes, one per thread; the clock runs
 * from the barrier that starts them to the one all of them reach. After the unmaps an
 * unmap-all must find nothing left.
 *
 * Prints one JSON line: {"backend":...,"threads":N,"count":N,"bytes":B,"mapNs":...,"unmapNs":...},
 * for an op list {"backend":...,"threads":1,"ops":N,"ns":...}.
 * Exits 1 on any failed call, naming it, its section and the errno; 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
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

#define MAX_THREADS 64

struct section {
  uint64_t iova, size, offset;
  int ro;
  char op; /* 0: a section of a map-all / unmap-all run; 'm' or 'u': one op of an op list */
};

static struct section *sections;
static uint64_t count;
/* An op list's timed part: [start, stop). */
static uint64_t start_op, stop_op;
static int op_list;
static uint8_t *va;
static int iommufd_mode, iommufd = -1, container = -1;
static uint32_t ioas;
static unsigned threads = 1;
static pthread_barrier_t barrier;

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
  fprintf(stderr, "usage: floor --backend iommufd|legacy --device PATH --ram BYTES --backing memfd|thp|hugetlb "
                  "[--fd FD] [--threads N] < sections (IOVA SIZE OFFSET per line)\n");
  exit(2);
}

static uint64_t number(const char *s) {
  char *end;
  errno = 0;
  uint64_t v = strtoull(s, &end, 0);
  if (errno || !*s || *end) usage();
  return v;
}

static void map_one(uint64_t i) {
  const struct section *s = &sections[i];
  if (iommufd_mode) {
    struct iommu_ioas_map m = {.size = sizeof(m), .ioas_id = ioas};
    m.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | (s->ro ? 0 : IOMMU_IOAS_MAP_WRITEABLE);
    m.user_va = (uintptr_t)(va + s->offset);
    m.length = s->size;
    m.iova = s->iova;
    if (ioctl(iommufd, IOMMU_IOAS_MAP, &m)) die("IOMMU_IOAS_MAP", (long)i, s->iova);
  } else {
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m)};
    m.flags = VFIO_DMA_MAP_FLAG_READ | (s->ro ? 0 : VFIO_DMA_MAP_FLAG_WRITE);
    m.vaddr = (uintptr_t)(va + s->offset);
    m.size = s->size;
    m.iova = s->iova;
    if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m)) die("VFIO_IOMMU_MAP_DMA", (long)i, s->iova);
  }
}

static void unmap_one(uint64_t i) {
  const struct section *s = &sections[i];
  if (iommufd_mode) {
    struct iommu_ioas_unmap u = {.size = sizeof(u), .ioas_id = ioas, .iova = s->iova, .length = s->size};
    if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &u)) die("IOMMU_IOAS_UNMAP", (long)i, s->iova);
    if (u.length != s->size) {
      errno = EIO;
      die("IOMMU_IOAS_UNMAP unmapped a different length", (long)i, s->iova);
    }
  } else {
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = s->iova, .size = s->size};
    if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u)) die("VFIO_IOMMU_UNMAP_DMA", (long)i, s->iova);
    if (u.size != s->size) {
      errno = EIO;
      die("VFIO_IOMMU_UNMAP_DMA unmapped a different size", (long)i, s->iova);
    }
  }
}

/* One lane: the maps at the first pair of barriers, the unmaps at the second. */
static void *lane(void *arg) {
  uintptr_t k = (uintptr_t)arg;
  uint64_t from = count * k / threads, to = count * (k + 1) / threads;
  pthread_barrier_wait(&barrier);
  for (uint64_t i = from; i < to; i++) map_one(i);
  pthread_barrier_wait(&barrier);
  pthread_barrier_wait(&barrier);
  for (uint64_t i = from; i < to; i++) unmap_one(i);
  pthread_barrier_wait(&barrier);
  return NULL;
}

static void bad_line(const char *line) {
  fprintf(stderr, "floor: bad line %s", line);
  exit(2);
}

static void read_sections(uint64_t ram) {
  size_t cap = 1024;
  sections = malloc(cap * sizeof(*sections));
  char line[256];
  int marks = 0; /* 1 after "start", 2 after "stop" */
  while (fgets(line, sizeof(line), stdin)) {
    char w[5][80];
    if (line[0] == '\n') continue;
    int n = sscanf(line, "%79s %79s %79s %79s %79s", w[0], w[1], w[2], w[3], w[4]);
    struct section s = {0};
    int is_start = !strcmp(w[0], "start");
    if (is_start || !strcmp(w[0], "stop")) {
      if (n != 1 || marks != (is_start ? 0 : 1) || (count && !op_list)) bad_line(line);
      op_list = 1;
      if (marks++ == 0) start_op = count;
      else stop_op = count;
      continue;
    }
    if (!strcmp(w[0], "map") || !strcmp(w[0], "unmap")) {
      int map = w[0][0] == 'm';
      int arity = map ? (n == 4 || n == 5) : n == 3;
      if ((count && !op_list) || !arity || (n == 5 && strcmp(w[4], "ro"))) bad_line(line);
      op_list = 1;
      s = (struct section){number(w[1]), number(w[2]), map ? number(w[3]) : 0, n == 5, map ? 'm' : 'u'};
    } else {
      if (op_list || n < 3 || n > 4 || (n == 4 && strcmp(w[3], "ro"))) bad_line(line);
      s = (struct section){number(w[0]), number(w[1]), number(w[2]), n == 4, 0};
    }
    if (!s.size || (s.iova | s.size | s.offset) & 4095 || s.offset + s.size > ram || s.offset + s.size < s.offset) {
      fprintf(stderr, "floor: bad section %s", line);
      exit(2);
    }
    if (count == cap) sections = realloc(sections, (cap *= 2) * sizeof(*sections));
    if (!sections) die("realloc", -1, 0);
    sections[count++] = s;
  }
  if (!count) usage();
  if (op_list && marks < 2) stop_op = count;
}

int main(int argc, char **argv) {
  const char *backend = NULL, *device = NULL, *backing = "memfd";
  uint64_t ram = 0;
  int memfd = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
    else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
    else if (!strcmp(argv[i], "--ram")) ram = number(argv[i + 1]);
    else if (!strcmp(argv[i], "--backing")) backing = argv[i + 1];
    else if (!strcmp(argv[i], "--fd")) memfd = (int)number(argv[i + 1]);
    else if (!strcmp(argv[i], "--threads")) threads = (unsigned)number(argv[i + 1]);
    else usage();
  }
  if (argc % 2 == 0 || !backend || !device || !ram || (ram & 4095) || !threads || threads > MAX_THREADS) usage();
  iommufd_mode = !strcmp(backend, "iommufd");
  if (!iommufd_mode && strcmp(backend, "legacy")) usage();
  int thp = !strcmp(backing, "thp");
  if (!thp && strcmp(backing, "memfd") && strcmp(backing, "hugetlb")) usage();
  read_sections(ram);
  if (op_list && threads != 1) usage(); /* an op list runs in order */

  /* Guest RAM, pre-faulted writable. */
  if (thp) {
    va = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (va == MAP_FAILED) die("mmap", -1, 0);
    if (madvise(va, ram, MADV_HUGEPAGE)) die("madvise(MADV_HUGEPAGE)", -1, 0);
  } else {
    if (memfd < 0) {
      memfd = memfd_create("vfio-engine-floor", MFD_CLOEXEC | (strcmp(backing, "hugetlb") ? 0 : MFD_HUGETLB));
      if (memfd < 0) die("memfd_create", -1, 0);
      if (ftruncate(memfd, (off_t)ram)) die("ftruncate", -1, 0);
    }
    va = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (va == MAP_FAILED) die("mmap", -1, 0);
  }
  for (uint64_t off = 0; off < ram; off += 4096) ((volatile uint8_t *)va)[off] = 0;

  int dev = -1, group = -1;
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

  uint64_t t0 = 0, t1 = 0, t2, t3;
  if (op_list) {
    /* In order, on one thread: the untimed ops before "start", the timed ones, the untimed rest. */
    for (uint64_t i = 0; i < count; i++) {
      if (i == start_op) t0 = now_ns();
      if (i == stop_op) t1 = now_ns();
      (sections[i].op == 'm' ? map_one : unmap_one)(i);
    }
    if (stop_op == count) t1 = now_ns();
    if (start_op == count) t0 = t1;
    t2 = t3 = 0;
  } else if (threads == 1) {
    t0 = now_ns();
    for (uint64_t i = 0; i < count; i++) map_one(i);
    t1 = now_ns();
    t2 = now_ns();
    for (uint64_t i = 0; i < count; i++) unmap_one(i);
    t3 = now_ns();
  } else {
    pthread_t tid[MAX_THREADS];
    if (pthread_barrier_init(&barrier, NULL, threads + 1)) die("pthread_barrier_init", -1, 0);
    for (uintptr_t k = 0; k < threads; k++)
      if ((errno = pthread_create(&tid[k], NULL, lane, (void *)k))) die("pthread_create", -1, 0);
    pthread_barrier_wait(&barrier);
    t0 = now_ns();
    pthread_barrier_wait(&barrier);
    t1 = now_ns();
    pthread_barrier_wait(&barrier);
    t2 = now_ns();
    pthread_barrier_wait(&barrier);
    t3 = now_ns();
    for (unsigned k = 0; k < threads; k++) pthread_join(tid[k], NULL);
  }

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
  munmap(va, ram);
  if (op_list) {
    printf("{\"backend\":\"%s\",\"threads\":1,\"ops\":%" PRIu64 ",\"ns\":%" PRIu64 "}\n", backend,
           stop_op - start_op, t1 - t0);
    return 0;
  }
  uint64_t bytes = 0;
  for (uint64_t i = 0; i < count; i++) bytes += sections[i].size;
  printf("{\"backend\":\"%s\",\"threads\":%u,\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"mapNs\":%" PRIu64
         ",\"unmapNs\":%" PRIu64 "}\n",
         backend, threads, count, bytes, t1 - t0, t3 - t2);
  return 0;
}
