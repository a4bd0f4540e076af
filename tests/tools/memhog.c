// SPDX-License-Identifier: MIT
/*
 * memhog — the memory hog of the pressure tests: allocate anonymous memory
 * in steps, touch every page, hold it, then leave.
 *
 *	memhog MIB [--step MIB] [--step-ms MS] [--hold SECONDS] [--cycles N]
 *	       [--pause SECONDS] [--ready FILE] [--stop FILE] [--file PATH [--rate MIBPS]]
 *
 * With --file the hog is page cache instead: every cycle drops PATH's cached
 * pages (POSIX_FADV_DONTNEED), then reads it over and over for --hold
 * seconds (its pages are charged to the reader's cgroup, so a file larger
 * than the limit keeps the cgroup reclaiming without any risk of an OOM
 * kill), then drops them again.  MIB is ignored.  --rate paces the reads
 * (MiB per second; default: as fast as they go, which takes a core).
 *
 * Each cycle grows to MIB MiB (--step MiB every --step-ms), holds for
 * --hold seconds (or until FILE given by --stop exists), frees everything
 * ("leave" as it starts, "free" when done) and pauses.  Prints one JSON line per phase change with CLOCK_MONOTONIC
 * ns, so a benchmark can line the hog up with switch decisions.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static void sleep_ms(double ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6) };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

static int file_hog(const char *path, double hold, long cycles, double pause_s, const char *stop,
		    double rate)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		fprintf(stderr, "memhog: %s: %s\n", path, strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (long c = 0; c < cycles; c++) {
		unsigned long long t;
		unsigned long long bytes = 0;
		off_t off = 0;

		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		t = now_ns();
		printf("{\"hog\":\"grow\",\"cycle\":%ld,\"t_ns\":%llu}\n", c, t);
		while ((double)(now_ns() - t) < hold * 1e9 && !(stop && !access(stop, F_OK))) {
			ssize_t n = pread(fd, buf, sizeof(buf), off);

			if (n <= 0) {
				off = 0;
				continue;
			}
			off += n;
			bytes += (unsigned long long)n;
			if (rate > 0)
				sleep_ms((double)bytes / (rate * 1048576) * 1e3 - (double)(now_ns() - t) / 1e6);
		}
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		printf("{\"hog\":\"free\",\"cycle\":%ld,\"t_ns\":%llu,\"bytes_read\":%llu}\n", c,
		       now_ns(), bytes);
		if (stop && !access(stop, F_OK))
			break;
		sleep_ms(pause_s * 1000);
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	double mib = 0, step = 4, step_ms = 20, hold = 2, pause_s = 0, rate = 0;
	long cycles = 1;
	const char *stop = NULL, *ready = NULL, *file = NULL;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--step") && v)
			step = atof(argv[++i]);
		else if (!strcmp(a, "--step-ms") && v)
			step_ms = atof(argv[++i]);
		else if (!strcmp(a, "--hold") && v)
			hold = atof(argv[++i]);
		else if (!strcmp(a, "--cycles") && v)
			cycles = atol(argv[++i]);
		else if (!strcmp(a, "--pause") && v)
			pause_s = atof(argv[++i]);
		else if (!strcmp(a, "--stop") && v)
			stop = argv[++i];
		else if (!strcmp(a, "--file") && v)
			file = argv[++i];
		else if (!strcmp(a, "--rate") && v)
			rate = atof(argv[++i]);
		else if (!strcmp(a, "--ready") && v)
			ready = argv[++i];
		else if (a[0] != '-' && !mib)
			mib = atof(a);
		else {
			fprintf(stderr, "usage: memhog MIB [--step MIB] [--step-ms MS] [--hold S] "
					"[--cycles N] [--pause S] [--ready FILE] [--stop FILE] "
					"[--file PATH [--rate MIBPS]]\n");
			return 2;
		}
	}
	if (file)
		return file_hog(file, hold, cycles, pause_s, stop, rate);
	if (mib <= 0 || step <= 0 || cycles < 1) {
		fprintf(stderr, "memhog: MIB, --step and --cycles must be positive\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (long c = 0; c < cycles; c++) {
		size_t total = (size_t)(mib * 1048576), chunk = (size_t)(step * 1048576), have = 0;
		size_t nchunks = (total + chunk - 1) / chunk, n = 0;
		char **chunks = calloc(nchunks, sizeof(*chunks));
		unsigned long long t;

		if (!chunks)
			return 1;
		printf("{\"hog\":\"grow\",\"cycle\":%ld,\"t_ns\":%llu}\n", c, now_ns());
		while (have < total) {
			size_t len = total - have < chunk ? total - have : chunk;
			char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				       -1, 0);

			if (p == MAP_FAILED) {
				fprintf(stderr, "memhog: mmap: %s\n", strerror(errno));
				return 1;
			}
			for (size_t o = 0; o < len; o += page)
				p[o] = (char)(o / page + 1);
			chunks[n++] = p;
			have += len;
			sleep_ms(step_ms);
		}
		t = now_ns();
		printf("{\"hog\":\"full\",\"cycle\":%ld,\"t_ns\":%llu,\"bytes\":%zu}\n", c, t, have);
		if (ready && c == 0) {
			FILE *f = fopen(ready, "w");

			if (f)
				fclose(f);
		}
		while ((double)(now_ns() - t) < hold * 1e9 && !(stop && !access(stop, F_OK)))
			sleep_ms(20);
		/* Freeing takes milliseconds: what watches usage may react before "free". */
		printf("{\"hog\":\"leave\",\"cycle\":%ld,\"t_ns\":%llu}\n", c, now_ns());
		for (size_t i = 0; i < n; i++)
			munmap(chunks[i], i + 1 < n ? chunk : total - chunk * (n - 1));
		free(chunks);
		printf("{\"hog\":\"free\",\"cycle\":%ld,\"t_ns\":%llu}\n", c, now_ns());
		if (stop && !access(stop, F_OK))
			break;
		sleep_ms(pause_s * 1000);
	}
	return 0;
}
