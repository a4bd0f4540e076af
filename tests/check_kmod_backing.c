// SPDX-License-Identifier: MIT
/*
 * Kernel-module residency on a machine without the module (this host's
 * kernel cannot load modules; tests/kmod/nq_kmod_runtime.c runs the real
 * thing inside qemu).
 *
 *  - Without /dev/nestquant every way in fails cleanly and says why:
 *    NQ_OPEN_KMOD, nq_model_use_kmod, autoswitch --signal kmod; auto skips
 *    kmod and says so.
 *  - The reader protocol, with a stand-in for the module: the region is a
 *    heap copy of the top level's plane range and the status page a plain
 *    struct.  Published: inferences read the copy (a changed copy changes
 *    the full-bit answer) and leave the pin count at zero.  Purged:
 *    nq_session_run answers at part bit and reports it, an explicit level
 *    reads the file's planes instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmod_backing.h"
#include "model.h"
#include "nestquant.h"
#include "nq_error.h"
#include "nq_test.h"

static char model_path[600];

static void setup_path(void)
{
	snprintf(model_path, sizeof(model_path), "%s/tests/corpus/format-good/sample.nq",
		 nq_test_srcdir());
}

static struct nq_model *open_plain(void)
{
	struct nq_model_opts o = { .level = -1, .flags = NQ_OPEN_NO_AUTOSWITCH };
	struct nq_model *m = NULL;

	ck_assert_msg(nq_model_open(model_path, &o, &m) == 0, "%s", nq_last_error());
	return m;
}

START_TEST(open_kmod_without_module_names_it)
{
	struct nq_model_opts o = { .level = -1, .flags = NQ_OPEN_KMOD | NQ_OPEN_NO_AUTOSWITCH };
	struct nq_model *m = NULL;

	if (!access(NQ_KMOD_DEVICE, F_OK))
		NQ_SKIP("nestquant.ko is loaded here");
	ck_assert_int_eq(nq_model_open(model_path, &o, &m), -ENOENT);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "/dev/nestquant"));
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "nestquant.ko loaded"));
}
END_TEST

START_TEST(use_kmod_checks_its_arguments)
{
	struct nq_model *m = open_plain();
	struct nq_kmod_residency st;

	ck_assert_int_eq(nq_model_use_kmod(NULL, 0), -EINVAL);
	ck_assert_int_eq(nq_model_use_kmod(m, 2), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "level 2 out of range"));
	if (access(NQ_KMOD_DEVICE, F_OK))
		ck_assert_int_eq(nq_model_use_kmod(m, 1), -ENOENT);
	ck_assert_int_eq(nq_model_kmod_status(m, &st), 0);
	if (access(NQ_KMOD_DEVICE, F_OK))
		ck_assert_int_eq(st.active, 0);
	ck_assert_int_eq(nq_model_kmod_status(m, NULL), -EINVAL);
	nq_model_close(m);
}
END_TEST

START_TEST(autoswitch_kmod_fails_cleanly_auto_moves_on)
{
	struct nq_autoswitch_opts kmod = { .signal = "kmod" };
	struct nq_autoswitch_opts aut = { .signal = "auto" };
	struct nq_autoswitch_info ai;
	struct nq_model *m;
	int err;

	if (!access(NQ_KMOD_DEVICE, F_OK))
		NQ_SKIP("nestquant.ko is loaded here");
	m = open_plain();
	err = nq_model_enable_autoswitch(m, &kmod);
	ck_assert_int_lt(err, 0);
	ck_assert_msg(strstr(nq_last_error(), "nestquant") != NULL, "%s", nq_last_error());
	ck_assert_int_eq(nq_model_autoswitch_info(m, &ai), 0);
	ck_assert_int_eq(ai.active, 0);
	/* auto starts with another source and says why not kmod; kmod stayed off. */
	ck_assert_msg(nq_model_enable_autoswitch(m, &aut) == 0, "%s", nq_last_error());
	nq_model_autoswitch_info(m, &ai);
	ck_assert_str_ne(ai.source, "kmod");
	ck_assert_msg(strstr(ai.selection, "kmod: nestquant.ko not loaded") != NULL, "%s",
		      ai.selection);
	nq_model_disable_autoswitch(m);
	ck_assert_ptr_null(m->kmod);
	nq_model_close(m);
}
END_TEST

/* The module stand-in: a heap region and a status struct. */
struct fake {
	struct nq_kmod_backing kb;
	struct nq_kmod_status st;
	uint8_t *copy;
};

static void fake_attach(struct nq_model *m, struct fake *f)
{
	unsigned int top = m->n_levels - 1;

	memset(f, 0, sizeof(*f));
	f->kb.from = f->kb.top = top;
	ck_assert_int_eq(nq_file_region(m->file, top, &f->kb.off[top], &f->kb.len[top]), 0);
	f->copy = malloc(f->kb.len[top]);
	ck_assert_ptr_nonnull(f->copy);
	memcpy(f->copy, nq_file_data(m->file) + f->kb.off[top], f->kb.len[top]);
	for (unsigned int k = 0; k < NQ_FORMAT_MAX_LEVELS; k++)
		f->kb.reg[k].fd = -1;
	f->kb.reg[top].data = f->copy;
	f->kb.reg[top].size = f->kb.len[top];
	f->kb.reg[top].status = &f->st;
	m->kmod = &f->kb;
}

START_TEST(readers_follow_the_pin_protocol)
{
	struct nq_model *m = open_plain();
	unsigned int top = m->n_levels - 1;
	size_t nin = nq_model_input_count(m), nout = nq_model_output_count(m);
	float *in = calloc(nin, sizeof(float)), *full = calloc(nout, sizeof(float));
	float *part = calloc(nout, sizeof(float)), *y = calloc(nout, sizeof(float));
	struct nq_session *s;
	struct fake f;
	int level;

	ck_assert_int_eq(nq_session_create(m, &s), 0);
	for (size_t i = 0; i < nin; i++)
		in[i] = (float)((i * 37 + 11) % 256);
	ck_assert_int_eq(nq_session_run_level(s, top, in, full), 0);
	ck_assert_int_eq(nq_session_run_level(s, 0, in, part), 0);
	/* Otherwise the level checks below could not tell the levels apart. */
	ck_assert(memcmp(full, part, nout * sizeof(float)));

	fake_attach(m, &f);
	/* Published: the answer comes from the region, at full bit. */
	ck_assert_int_eq(nq_session_run(s, in, y, &level), 0);
	ck_assert_int_eq(level, (int)top);
	ck_assert_mem_eq(y, full, nout * sizeof(float));
	ck_assert_uint_eq(f.st.state, 0);
	/* Proof that it is the region that is read: change it, the answer changes. */
	memset(f.copy, 0, f.kb.len[top]);
	ck_assert_int_eq(nq_session_run(s, in, y, &level), 0);
	ck_assert_int_eq(level, (int)top);
	ck_assert(memcmp(y, full, nout * sizeof(float)));
	ck_assert_uint_eq(f.st.state, 0);

	/* Purged (the zero-filled pages of a real purge): part bit, reported. */
	f.st.state = NQ_KMOD_PURGED;
	ck_assert_int_eq(nq_session_run(s, in, y, &level), 0);
	ck_assert_int_eq(level, (int)top - 1);
	ck_assert_mem_eq(y, part, nout * sizeof(float));
	ck_assert_uint_eq(f.st.state, NQ_KMOD_PURGED);
	ck_assert_uint_eq(atomic_load(&f.kb.pin_failures), 1);
	ck_assert_uint_ne(atomic_load(&f.kb.last_fail_ns), 0);
	/* An explicit level reads the file's planes instead of the zeros. */
	ck_assert_int_eq(nq_session_run_level(s, top, in, y), 0);
	ck_assert_mem_eq(y, full, nout * sizeof(float));
	ck_assert_uint_eq(f.st.state, NQ_KMOD_PURGED);

	/* Republished with the right bytes: full bit from the region again. */
	memcpy(f.copy, nq_file_data(m->file) + f.kb.off[top], f.kb.len[top]);
	f.st.state = 0;
	ck_assert_int_eq(nq_session_run(s, in, y, &level), 0);
	ck_assert_int_eq(level, (int)top);
	ck_assert_mem_eq(y, full, nout * sizeof(float));

	m->kmod = NULL;		/* the fake is not the module's: nq_kmod_detach must not close it */
	nq_session_destroy(s);
	nq_model_close(m);
	free(f.copy);
	free(in);
	free(full);
	free(part);
	free(y);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kmod_backing");
	TCase *tc = tcase_create("no module");
	TCase *pr = tcase_create("protocol");

	setup_path();
	tcase_add_test(tc, open_kmod_without_module_names_it);
	tcase_add_test(tc, use_kmod_checks_its_arguments);
	tcase_add_test(tc, autoswitch_kmod_fails_cleanly_auto_moves_on);
	suite_add_tcase(s, tc);
	tcase_add_test(pr, readers_follow_the_pin_protocol);
	suite_add_tcase(s, pr);
	return nq_test_run(s);
}
