// SPDX-License-Identifier: MIT
/*
 * nestquant info FILE [--json] [--verify]
 *
 * What a .nq file holds: header, levels with the bytes each one costs and the
 * bytes resident when serving at it, preprocessing, and one row per weight
 * layer.  Only metadata is read unless --verify asks for the region CRCs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "nq_error.h"
#include "nq_format.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant info FILE [--json] [--verify]\n\n"
		"Print what a .nq model file holds: format version, size, region alignment,\n"
		"producer; each precision level (bits, plane bytes, bytes resident when serving\n"
		"at that level); preprocessing; and a table of weight layers.\n\n"
		"  --json     machine-readable output (one JSON object)\n"
		"  --verify   also check the CRC32C of every plane region (reads them all)\n");
}

/* JSON string with the escapes RFC 8259 requires. */
static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* JSON has no NaN/Inf; the reader guarantees finite values, but be safe. */
static void json_num(FILE *out, double v)
{
	if (v != v || v > 1e308 || v < -1e308)
		fputs("null", out);
	else
		fprintf(out, "%.9g", v);
}

static uint64_t level_plane_bytes(const struct nq_file *f, uint32_t level)
{
	struct nq_plane_view v;
	uint64_t sum = 0;

	for (uint32_t i = 0; i < nq_file_layer_count(f); i++)
		if (!nq_file_plane(f, i, level, &v))
			sum += v.size;
	return sum;
}

static const char *layout_name(uint32_t layout)
{
	return layout == NQ_LAYOUT_NHWC ? "NHWC" : "NCHW";
}

static void shape_str(const struct nq_disk_layer *l, char *buf, size_t len)
{
	if (l->kind == NQ_LAYER_CONV)
		snprintf(buf, len, "%ux%u g%u", l->kh, l->kw, l->groups);
	else
		snprintf(buf, len, "-");
}

static void print_text(const struct nq_file *f, const char *path, int verified)
{
	const struct nq_disk_header *h = nq_file_header(f);
	const struct nq_disk_preprocess *p = nq_file_preprocess(f);
	uint32_t nl = nq_file_level_count(f), nin, nout;
	uint64_t resident = 0, region0;
	const char *producer = nq_file_meta(f, "producer");
	const char *key, *value;

	nq_file_region(f, 0, &region0, &resident);
	resident = 0;
	printf("file:        %s\n", path);
	printf("format:      %u.%u (%" PRIu64 " bytes, metadata %" PRIu64 " bytes, region alignment %u)\n",
	       h->version_major, h->version_minor, nq_file_size(f), region0, h->region_align);
	printf("producer:    %s\n", producer ? producer : "(unknown)");
	for (uint32_t i = 0; i < nq_file_meta_count(f); i++) {
		if (nq_file_meta_at(f, i, &key, &value) || !strcmp(key, "producer"))
			continue;
		printf("  %-18s %s\n", key, value);
	}
	nq_file_graph_inputs(f, &nin);
	nq_file_graph_outputs(f, &nout);
	printf("graph:       %u nodes, %u tensors, %u inputs, %u outputs, %u weight layers\n",
	       nq_file_node_count(f), nq_file_tensor_count(f), nin, nout, nq_file_layer_count(f));
	printf("preprocess:  layout %s, input x %g, mean [", layout_name(p->layout), p->input_scale);
	for (uint32_t c = 0; c < p->channels; c++)
		printf("%s%g", c ? ", " : "", p->mean[c]);
	printf("], std [");
	for (uint32_t c = 0; c < p->channels; c++)
		printf("%s%g", c ? ", " : "", p->std[c]);
	printf("]\n");

	printf("\nlevels (%u):%s\n", nl, verified ? "  region checksums verified" : "");
	printf("  %-5s %-4s %12s %12s %12s %18s %10s\n", "level", "bits", "planes", "region",
	       "offset", "resident at level", "crc32c");
	for (uint32_t k = 0; k < nl; k++) {
		const struct nq_disk_level *l = nq_file_level(f, k);

		resident += l->region_size;
		printf("  %-5u %-4u %12" PRIu64 " %12" PRIu64 " %12" PRIu64 " %18" PRIu64 "   %08x\n",
		       k, l->bits, level_plane_bytes(f, k), l->region_size, l->region_offset,
		       region0 + resident, l->region_crc32c);
	}

	printf("\nweight layers (%u):\n", nq_file_layer_count(f));
	printf("  %-4s %-24s %-4s %12s %-8s %-5s", "#", "name", "op", "OC x K", "kernel", "bias");
	for (uint32_t k = 0; k < nl; k++)
		printf(" %11s%u", "level", k);
	printf("\n");
	for (uint32_t i = 0; i < nq_file_layer_count(f); i++) {
		const struct nq_disk_layer *l = nq_file_layer(f, i);
		char shape[32], ock[32];

		shape_str(l, shape, sizeof(shape));
		snprintf(ock, sizeof(ock), "%ux%u", l->oc, l->k);
		printf("  %-4u %-24s %-4s %12s %-8s %-5s", i, nq_file_str(f, l->name),
		       nq_layer_kind_name(l->kind), ock, shape,
		       nq_file_layer_bias(f, i) ? "yes" : "no");
		for (uint32_t k = 0; k < nl; k++) {
			struct nq_plane_view v;
			char cell[32];

			nq_file_plane(f, i, k, &v);
			snprintf(cell, sizeof(cell), "%u%c%s:%" PRIu64, v.bits, v.is_signed ? 's' : 'u',
				 v.layout == NQ_PLANE_PANEL16X4 ? "p" : "", v.size);
			printf(" %12s", cell);
		}
		printf("\n");
	}
	printf("  (level cells: plane bits, s/u = signed/unsigned, p = panel16x4 order, : plane bytes)\n");
}

static void print_json(const struct nq_file *f, const char *path, int verified)
{
	const struct nq_disk_header *h = nq_file_header(f);
	const struct nq_disk_preprocess *p = nq_file_preprocess(f);
	uint32_t nl = nq_file_level_count(f), nin, nout;
	const uint32_t *gin = nq_file_graph_inputs(f, &nin);
	const uint32_t *gout = nq_file_graph_outputs(f, &nout);
	uint64_t region0, len, resident = 0;
	const char *key, *value;

	nq_file_region(f, 0, &region0, &len);
	printf("{\n  \"file\": ");
	json_str(stdout, path);
	printf(",\n  \"format\": \"%u.%u\",\n  \"size\": %" PRIu64 ",\n  \"metadata_bytes\": %" PRIu64
	       ",\n  \"region_align\": %u,\n  \"regions_verified\": %s,\n  \"metadata\": {",
	       h->version_major, h->version_minor, nq_file_size(f), region0, h->region_align,
	       verified ? "true" : "false");
	for (uint32_t i = 0; i < nq_file_meta_count(f); i++) {
		if (nq_file_meta_at(f, i, &key, &value))
			continue;
		printf("%s\n    ", i ? "," : "");
		json_str(stdout, key);
		printf(": ");
		json_str(stdout, value);
	}
	printf("\n  },\n  \"graph\": {\"nodes\": %u, \"tensors\": %u, \"layers\": %u, \"inputs\": [",
	       nq_file_node_count(f), nq_file_tensor_count(f), nq_file_layer_count(f));
	for (uint32_t i = 0; i < nin; i++) {
		printf("%s", i ? ", " : "");
		json_str(stdout, nq_file_str(f, nq_file_tensor(f, gin[i])->name));
	}
	printf("], \"outputs\": [");
	for (uint32_t i = 0; i < nout; i++) {
		printf("%s", i ? ", " : "");
		json_str(stdout, nq_file_str(f, nq_file_tensor(f, gout[i])->name));
	}
	printf("]},\n  \"preprocess\": {\"layout\": \"%s\", \"input_scale\": ", layout_name(p->layout));
	json_num(stdout, p->input_scale);
	printf(", \"mean\": [");
	for (uint32_t c = 0; c < p->channels; c++) {
		printf("%s", c ? ", " : "");
		json_num(stdout, p->mean[c]);
	}
	printf("], \"std\": [");
	for (uint32_t c = 0; c < p->channels; c++) {
		printf("%s", c ? ", " : "");
		json_num(stdout, p->std[c]);
	}
	printf("]},\n  \"levels\": [");
	for (uint32_t k = 0; k < nl; k++) {
		const struct nq_disk_level *l = nq_file_level(f, k);

		resident += l->region_size;
		printf("%s\n    {\"level\": %u, \"bits\": %u, \"plane_bytes\": %" PRIu64
		       ", \"region_offset\": %" PRIu64 ", \"region_bytes\": %" PRIu64
		       ", \"resident_bytes\": %" PRIu64 ", \"region_crc32c\": \"%08x\"}",
		       k ? "," : "", k, l->bits, level_plane_bytes(f, k), l->region_offset,
		       l->region_size, region0 + resident, l->region_crc32c);
	}
	printf("\n  ],\n  \"layers\": [");
	for (uint32_t i = 0; i < nq_file_layer_count(f); i++) {
		const struct nq_disk_layer *l = nq_file_layer(f, i);

		printf("%s\n    {\"name\": ", i ? "," : "");
		json_str(stdout, nq_file_str(f, l->name));
		printf(", \"op\": \"%s\", \"oc\": %u, \"k\": %u, \"groups\": %u, \"kh\": %u, \"kw\": %u, "
		       "\"bias\": %s, \"planes\": [",
		       nq_layer_kind_name(l->kind), l->oc, l->k, l->groups, l->kh, l->kw,
		       nq_file_layer_bias(f, i) ? "true" : "false");
		for (uint32_t k = 0; k < nl; k++) {
			struct nq_plane_view v;

			nq_file_plane(f, i, k, &v);
			printf("%s{\"bits\": %u, \"signed\": %s, \"bytes\": %" PRIu64 ", \"layout\": \"%s\", "
			       "\"row_stride\": %u}",
			       k ? ", " : "", v.bits, v.is_signed ? "true" : "false", v.size,
			       nq_plane_layout_name(v.layout), v.row_stride);
		}
		printf("]}");
	}
	printf("\n  ]\n}\n");
}

static int run(int argc, char **argv)
{
	const char *path = NULL;
	struct nq_file *f;
	int json = 0, verify = 0, err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--verify")) {
			verify = 1;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			cli_error("info", "unknown option '%s' (see nestquant info --help)", argv[i]);
			return 2;
		} else if (path) {
			cli_error("info", "one FILE expected, got '%s' and '%s'", path, argv[i]);
			return 2;
		} else {
			path = argv[i];
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	err = nq_file_open(path, &f);
	if (err) {
		cli_error("info", "%s: %s", path, nq_last_error());
		return 1;
	}
	if (verify) {
		err = nq_file_verify_planes(f, -1);
		if (err) {
			cli_error("info", "%s: %s", path, nq_last_error());
			nq_file_close(f);
			return 1;
		}
	}
	if (json)
		print_json(f, path, verify);
	else
		print_text(f, path, verify);
	nq_file_close(f);
	return 0;
}

const struct nq_verb nq_verb_info = {
	.name = "info",
	.summary = "show what a .nq model file holds (levels, bytes, layers)",
	.run = run,
	.usage = usage,
};
