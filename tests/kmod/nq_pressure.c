// SPDX-License-Identifier: MIT
/*
 * nq_pressure: push a (guest) machine just past its reclaim watermarks and
 * hold it there, so that kswapd -- not a test hook -- calls the shrinkers.
 *
 *	nq_pressure SECONDS	step until nestquant.ko purged a region,
 *				then hold the memory SECONDS
 *	nq_pressure SECONDS kswapd	step only until kswapd woke (for a
 *				runtime without the module: the BPF path)
 *
 * A fixed "leave N MB free" either stays above the watermarks (no reclaim)
 * or reaches the OOM killer.  Instead: read the zone watermarks from
 * /proc/zoneinfo, allocate in one go to 4 MB above the point where
 * allocations wake kswapd, then in small steps until the module's purge
 * counter moves, staying above the min watermarks -- kswapd's territory.
 *
 * kswapd stops being woken for a node after MAX_RECLAIM_RETRIES passes
 * that reclaimed nothing (on one vCPU it may run all of them while the
 * region happens to be pinned).  So after 1.5 s at the floor without a
 * purge the tool steps on below min, where the allocation itself reclaims
 * (direct reclaim), and says so (direct_reclaims=).
 *
 * Prints key=value lines (CLOCK_MONOTONIC ns) for the test to read.  Sets
 * its own oom_score_adj to 1000: if anything is killed, it is this tool.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../../kmod/nestquant_uapi.h"

#define PAGE 4096UL

/*
 * Pages an allocation can still take before it wakes kswapd (above_low) and
 * before it would enter direct reclaim (above_min), summed over zones; each
 * zone's threshold includes its lowmem protection against our allocations
 * (the largest entry of its protection array).
 */
struct zones {
	long free, above_low, above_min, gap;	/* gap: sum of low - min */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long clamp0(long v)
{
	return v > 0 ? v : 0;
}

/* An allocation wakes kswapd when every zone is below low + protection. */
static int read_zones(struct zones *z)
{
	char line[512];
	long v, managed = 0, zfree = 0, zmin = 0, zlow = 0, zprot = 0;
	int in_zone = 0;
	char *p;
	FILE *f = fopen("/proc/zoneinfo", "r");

	if (!f)
		return -errno;
	memset(z, 0, sizeof(*z));
#define FLUSH()								\
	do {								\
		if (in_zone && managed > 0) {				\
			z->free += zfree;				\
			z->above_low += clamp0(zfree - zlow - zprot);	\
			z->above_min += clamp0(zfree - zmin - zprot);	\
			z->gap += zlow - zmin;				\
		}							\
		managed = zfree = zmin = zlow = zprot = 0;		\
	} while (0)
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "Node ", 5)) {
			FLUSH();
			in_zone = 1;
		} else if (sscanf(line, " pages free %ld", &v) == 1) {
			zfree = v;
		} else if (sscanf(line, " min %ld", &v) == 1) {
			zmin = v;
		} else if (sscanf(line, " low %ld", &v) == 1) {
			zlow = v;
		} else if (sscanf(line, " managed %ld", &v) == 1) {
			managed = v;
		} else if ((p = strstr(line, "protection: ("))) {
			p += strlen("protection: (");
			for (;;) {
				char *end;
				long x = strtol(p, &end, 10);

				if (end == p)
					break;
				if (x > zprot)
					zprot = x;
				p = end;
				while (*p == ',' || *p == ' ')
					p++;
			}
		}
	}
	FLUSH();
#undef FLUSH
	fclose(f);
	return 0;
}

static long vmstat(const char *key)
{
	char name[128];
	long v, found = -1;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%127s %ld", name, &v) == 2)
		if (!strcmp(name, key))
			found = v;
	fclose(f);
	return found;
}

/* Direct reclaims so far (allocstall_<zone>, summed). */
static long allocstalls(void)
{
	char name[128];
	long v, n = 0;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%127s %ld", name, &v) == 2)
		if (!strncmp(name, "allocstall_", 11))
			n += v;
	fclose(f);
	return n;
}

/* The module's counters: purges, or count_objects calls (counted=1). */
static long module_stat(int dev, int counted)
{
	struct nq_kmod_stats st;

	if (dev < 0 || ioctl(dev, NQ_KMOD_IOC_STATS, &st) < 0)
		return -1;
	return (long)(counted ? st.count_calls : st.purges);
}

/* Allocate and touch pages, kept until exit. */
static int grab(unsigned long pages)
{
	void *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	memset(p, 0x5a, pages * PAGE);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t t0, t_floor = 0, t_wake = 0, t_last_step = 0, t_count = 0, t_purge = 0;
	long base_runs, base_stalls, base_purges, base_counts, step, held = 0;
	int hold_s, fd, dev, below_min = 0, until_wake;
	struct zones z;

	if (argc != 2 && !(argc == 3 && !strcmp(argv[2], "kswapd"))) {
		fprintf(stderr, "usage: nq_pressure HOLD_SECONDS [kswapd]\n");
		return 2;
	}
	hold_s = atoi(argv[1]);
	until_wake = argc == 3;

	fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "1000", 4) != 4)
			perror("oom_score_adj");
		close(fd);
	}
	dev = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);
	if (read_zones(&z) < 0) {
		perror("/proc/zoneinfo");
		return 1;
	}
	base_runs = vmstat("pageoutrun");
	base_stalls = allocstalls();
	base_purges = module_stat(dev, 0);
	base_counts = module_stat(dev, 1);
	step = z.gap / 4;
	if (step < 8)
		step = 8;
	if (step > 256)
		step = 256;
	printf("free_pages=%ld above_low_pages=%ld above_min_pages=%ld step_pages=%ld\n",
	       z.free, z.above_low, z.above_min, step);

	t0 = now_ns();
	if (z.above_low > 1024) {
		long n = z.above_low - 1024;

		if (grab((unsigned long)n) < 0) {
			perror("mmap");
			return 1;
		}
		held += n;
	}

	for (;;) {
		if (read_zones(&z) < 0)
			return 1;
		if (!t_wake && vmstat("pageoutrun") > base_runs)
			t_wake = now_ns();
		if (until_wake && t_wake)
			break;
		if (!t_count && module_stat(dev, 1) > base_counts)
			t_count = now_ns();
		if (module_stat(dev, 0) > base_purges) {
			t_purge = now_ns();
			break;
		}
		if (!below_min && z.above_min - step < z.gap / 2) {
			/* At the floor: kswapd's turn. */
			if (!t_floor)
				t_floor = now_ns();
			if (now_ns() - t_floor < 1500000000ull) {
				usleep(2000);
				continue;
			}
			if (until_wake)
				break;	/* below min only the OOM killer is left */
			below_min = 1;
		}
		if (now_ns() - t0 > 15000000000ull)
			break;
		t_last_step = now_ns();
		if (grab((unsigned long)step) < 0)
			break;
		held += step;
	}

	read_zones(&z);
	printf("allocated_pages=%ld free_after_pages=%ld kswapd_woke=%d counted=%d purged=%d direct_reclaims=%ld\n",
	       held, z.free, t_wake != 0, t_count != 0, t_purge != 0,
	       allocstalls() - base_stalls);
	printf("t_start_ns=%llu t_last_step_ns=%llu t_wake_seen_ns=%llu t_count_seen_ns=%llu t_purge_seen_ns=%llu\n",
	       (unsigned long long)t0, (unsigned long long)t_last_step,
	       (unsigned long long)t_wake, (unsigned long long)t_count,
	       (unsigned long long)t_purge);
	fflush(stdout);
	sleep((unsigned int)hold_s);
	return 0;
}
