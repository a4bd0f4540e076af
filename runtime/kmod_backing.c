// SPDX-License-Identifier: MIT
/*
 * Kernel-module residency: the residual planes of the top level(s) in
 * nestquant.ko regions (see kmod_backing.h for the reader protocol and
 * kmod/nestquant_uapi.h for the module's).
 *
 * Why the file's copy is dropped after each fill: the module reads the
 * .nq file through the page cache (kernel_read), so right after a FILL the
 * planes are in memory twice, once in the region and once as cached file
 * pages (and, when the level was paged in before, in our mapping too).
 * MADV_DONTNEED lets go of our mapping, POSIX_FADV_DONTNEED then evicts the
 * cached pages nobody else maps.  What stays is the region, which the
 * kernel may take back by itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod_backing.h"
#include "model.h"
#include "nq_error.h"

#define FILL_CHUNK (16ull << 20)	/* bytes per FILL ioctl */
#define FILL_TRIES 3			/* a purge may race a refill */

static uint64_t page_size(void)
{
	long ps = sysconf(_SC_PAGESIZE);

	return ps > 0 ? (uint64_t)ps : 4096;
}

static struct nq_kmod_backing *backing(const struct nq_model *m)
{
	return __atomic_load_n(&m->kmod, __ATOMIC_ACQUIRE);
}

static bool published(const struct nq_kmod_region *r)
{
	return !(__atomic_load_n(&r->status->state, __ATOMIC_ACQUIRE) & NQ_KMOD_PURGED);
}

/* The page-aligned part of [off, off + len) inside the file. */
static void inner_pages(const struct nq_model *m, uint64_t off, uint64_t len, uint64_t *a,
			uint64_t *e)
{
	uint64_t ps = page_size(), end = off + len, size = nq_file_size(m->file);

	if (end > size)
		end = size;
	*a = (off + ps - 1) & ~(ps - 1);
	*e = end & ~(ps - 1);
	if (end == size)
		*e = (end + ps - 1) & ~(ps - 1);	/* the mapping's last page is ours */
	if (*e < *a)
		*e = *a;
}

/* Let go of the file's copy of a level's planes (see the top of the file). */
static int drop_file_copy(struct nq_model *m, uint64_t off, uint64_t len)
{
	const uint8_t *base = nq_file_data(m->file);
	uint64_t a, e;
	int err;

	inner_pages(m, off, len, &a, &e);
	if (e == a)
		return 0;
	if (madvise((void *)(base + a), e - a, MADV_DONTNEED) < 0)
		return nq_fail(-errno, "kmod: MADV_DONTNEED of the file's planes %llu+%llu: %s",
			       (unsigned long long)a, (unsigned long long)(e - a), strerror(errno));
	err = posix_fadvise(nq_file_fd(m->file), (off_t)a, (off_t)(e - a), POSIX_FADV_DONTNEED);
	if (err)
		return nq_fail(-err, "kmod: POSIX_FADV_DONTNEED of the file's planes: %s",
			       strerror(err));
	return 0;
}

/* Bytes of [off, off + len) of the file in the page cache (mincore). */
static uint64_t file_cached(const struct nq_model *m, uint64_t off, uint64_t len)
{
	uint64_t ps = page_size(), a, e, n = 0;
	unsigned char *vec;

	inner_pages(m, off, len, &a, &e);
	if (e == a)
		return 0;
	vec = malloc((e - a) / ps);
	if (!vec)
		return 0;
	if (!mincore((void *)(nq_file_data(m->file) + a), e - a, vec))
		for (uint64_t i = 0; i < (e - a) / ps; i++)
			n += vec[i] & 1;
	free(vec);
	return n * ps;
}

/* FILL the whole region of level k from the file and PUBLISH it. */
static int fill(struct nq_model *m, struct nq_kmod_backing *kb, unsigned int k)
{
	struct nq_kmod_region *r = &kb->reg[k];
	uint64_t size = nq_file_size(m->file), len = kb->len[k];
	int err = 0;

	if (kb->off[k] + len > size)
		len = size - kb->off[k];
	for (int tries = 0; tries < FILL_TRIES; tries++) {
		for (uint64_t o = 0; o < len && !err; o += FILL_CHUNK)
			err = nq_kmod_region_fill(r, nq_file_fd(m->file), kb->off[k] + o, o,
						  len - o < FILL_CHUNK ? len - o : FILL_CHUNK);
		if (!err)
			err = nq_kmod_region_publish(r);
		if (err != -ENODATA)
			break;
		err = 0;	/* purged while filling: fill again */
	}
	if (err)
		return nq_fail_context(err, "level %u's region", k);
	kb->seen_seq[k] = nq_kmod_region_purge_seq(r);
	return drop_file_copy(m, kb->off[k], kb->len[k]);
}

static void free_backing(struct nq_kmod_backing *kb)
{
	if (!kb)
		return;
	for (unsigned int k = 0; k < NQ_FORMAT_MAX_LEVELS; k++)
		nq_kmod_region_close(&kb->reg[k]);
	free(kb);
}

int nq_model_use_kmod(struct nq_model *m, unsigned int from_level)
{
	struct nq_kmod_backing *kb;
	unsigned int top;
	int err;

	if (!m)
		return nq_fail(-EINVAL, "kmod: NULL model");
	if (m->n_levels < 2)
		return nq_fail(-EINVAL, "kmod: the model has a single level: no residual planes to move");
	top = m->n_levels - 1;
	if (!from_level)
		from_level = top;
	if (from_level > top)
		return nq_fail(-EINVAL, "kmod: level %u out of range (residual levels 1..%u)",
			       from_level, top);
	if (backing(m))
		return nq_fail(-EALREADY, "kmod: the model's planes are in nestquant.ko already");
	if (nq_file_fd(m->file) < 0)
		return nq_fail(-EINVAL, "kmod: the model is not backed by a file");

	kb = calloc(1, sizeof(*kb));
	if (!kb)
		return nq_fail(-ENOMEM, "kmod: out of memory");
	for (unsigned int k = 0; k < NQ_FORMAT_MAX_LEVELS; k++)
		kb->reg[k].fd = -1;
	kb->from = from_level;
	kb->top = top;
	for (unsigned int k = from_level; k <= top; k++) {
		err = nq_file_region(m->file, k, &kb->off[k], &kb->len[k]);
		if (err)
			goto err_free;
		if (!kb->len[k] || kb->off[k] >= nq_file_size(m->file)) {
			err = nq_fail(-EINVAL, "kmod: level %u has no plane bytes to move", k);
			goto err_free;
		}
		err = nq_kmod_region_open(&kb->reg[k], kb->len[k]);
		if (err)
			goto err_free;
		err = fill(m, kb, k);
		if (err)
			goto err_free;
	}
	/* Readers see the regions only once every one is published. */
	__atomic_store_n(&m->kmod, kb, __ATOMIC_RELEASE);
	return 0;

err_free:
	free_backing(kb);
	return nq_fail_context(err, "moving level %u's planes into %s", from_level, NQ_KMOD_DEVICE);
}

int nq_kmod_refill(struct nq_model *m, unsigned int level)
{
	struct nq_kmod_backing *kb = backing(m);
	uint64_t t0 = 0;
	int err;

	if (!kb)
		return 0;
	for (unsigned int k = kb->from; k <= level && k <= kb->top; k++) {
		if (published(&kb->reg[k]))
			continue;
		if (!t0)
			t0 = nq_kmod_now_ns();
		err = fill(m, kb, k);
		if (err)
			return nq_fail_context(err, "refilling from %s", NQ_KMOD_DEVICE);
	}
	if (t0) {
		kb->refills++;
		kb->last_refill_ns = nq_kmod_now_ns() - t0;
		atomic_store(&kb->last_fail_ns, 0);
	}
	return 0;
}

int nq_model_kmod_status(struct nq_model *m, struct nq_kmod_residency *out)
{
	struct nq_kmod_backing *kb;

	if (!m || !out)
		return nq_fail(-EINVAL, "kmod status: NULL argument");
	memset(out, 0, sizeof(*out));
	kb = backing(m);
	if (!kb)
		return 0;
	out->active = 1;
	out->from_level = kb->from;
	out->top_level = kb->top;
	for (unsigned int k = kb->from; k <= kb->top; k++) {
		const struct nq_kmod_region *r = &kb->reg[k];
		uint64_t t = __atomic_load_n(&r->status->purge_time_ns, __ATOMIC_RELAXED);

		out->region_bytes += r->size;
		out->resident_bytes += __atomic_load_n(&r->status->resident_pages, __ATOMIC_RELAXED) *
				       page_size();
		out->file_cached_bytes += file_cached(m, kb->off[k], kb->len[k]);
		out->published |= published(r) ? 1u << k : 0;
		out->purges += nq_kmod_region_purge_seq(r);
		if (t > out->last_purge_ns)
			out->last_purge_ns = t;
	}
	out->refills = kb->refills;
	out->pin_failures = atomic_load(&kb->pin_failures);
	out->pin_failed_ns = atomic_load(&kb->last_fail_ns);
	out->last_refill_ns = kb->last_refill_ns;
	return 0;
}

int nq_kmod_for_signal(struct nq_model *m, const char *signal, int *fd)
{
	struct nq_kmod_backing *kb;
	bool want;
	int err;

	*fd = -1;
	if (!signal)
		signal = getenv("NQ_SIGNAL");
	if (!signal || !*signal)
		signal = "auto";
	want = !strcmp(signal, "kmod");
	if (!want && !(!strcmp(signal, "auto") && !access(NQ_KMOD_DEVICE, F_OK)))
		return 0;
	if (!backing(m) && m->n_levels >= 2) {
		err = nq_model_use_kmod(m, 0);
		if (err && want)
			return err;
		nq_clear_error();
	}
	kb = backing(m);
	if (kb)
		*fd = kb->reg[kb->top].fd;
	return 0;
}

void nq_kmod_detach(struct nq_model *m)
{
	free_backing(backing(m));
	m->kmod = NULL;
}
