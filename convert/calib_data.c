// SPDX-License-Identifier: MIT
/*
 * Calibration inputs: Fashion-MNIST, an IDX or .npy file, an ImageNet-style
 * folder of JPEG/PNG images, or uniform noise (data-free, as the paper's
 * reference code calibrates).  Every source holds raw caller values (8-bit
 * pixels, usually) and goes through the preprocessing the runtime applies,
 * (v * input_scale - mean) / std, so calibration sees what inference sees.
 *
 * This file includes dataset.h and not graph.h: both declare an enum
 * nq_dtype, so they cannot share a translation unit.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>

#include "convert.h"
#include "dataset.h"
#include "nq_error.h"
#include "nq_format.h"

#define MAX_FOLDER_FILES 1000000

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

float nq_convert_input_scale(const struct nq_convert_pre *pre)
{
	return pre->input_scale > 0 ? pre->input_scale : 1.0f / 255.0f;
}

/* Apply (v - mean) / std per channel, in place, on count NCHW samples. */
static int normalise(const struct nq_convert_pre *pre, const struct nq_calib_shape *sh,
		     float *x, unsigned count)
{
	size_t plane = (size_t)sh->h * sh->w;

	if (!pre->channels)
		return 0;
	if (pre->channels != 1 && pre->channels != sh->c)
		return nq_fail(-EINVAL, "--mean/--std give %u channels, the model input has %u",
			       pre->channels, sh->c);
	for (unsigned n = 0; n < count; n++)
		for (unsigned c = 0; c < sh->c; c++) {
			unsigned pc = pre->channels == 1 ? 0 : c;
			float m = pre->mean[pc], s = pre->std[pc];
			float *p = x + ((size_t)n * sh->c + c) * plane;

			for (size_t i = 0; i < plane; i++)
				p[i] = (p[i] - m) / s;
		}
	return 0;
}

static int noise_inputs(const struct nq_convert_opts *o, const struct nq_calib_shape *sh,
			unsigned count, float *x)
{
	uint64_t st = o->seed ^ 0x6e71636e6f697365ull;
	size_t n = (size_t)count * sh->c * sh->h * sh->w;

	for (size_t i = 0; i < n; i++)
		x[i] = (float)(splitmix(&st) >> 40) * (1.0f / 16777216.0f);
	return 0;
}

/*
 * Copy `count` samples from an array to NCHW floats times `scale`.  Accepted
 * shapes: [N, H, W] (one channel), [N, C, H, W] or [N, H, W, C] (per
 * layout), [N, C*H*W] (flat, NCHW).  Types u8, f32, f64.
 */
static int array_inputs(const struct nq_array *a, const char *path, int layout, float scale,
			const struct nq_calib_shape *sh, unsigned count, float *x, unsigned *n_out)
{
	size_t per = (size_t)sh->c * sh->h * sh->w;
	bool nhwc = false;
	unsigned n;

	if (a->ndim < 2)
		return nq_fail(-EINVAL, "%s: calibration data has rank %u, need [N, ...]", path, a->ndim);
	if (a->ndim == 3 && !(sh->c == 1 && a->dims[1] == sh->h && a->dims[2] == sh->w))
		goto bad_shape;
	if (a->ndim == 2 && a->dims[1] != per)
		goto bad_shape;
	if (a->ndim == 4) {
		nhwc = layout == NQ_LAYOUT_NHWC;
		if (nhwc ? (a->dims[1] != sh->h || a->dims[2] != sh->w || a->dims[3] != sh->c)
			 : (a->dims[1] != sh->c || a->dims[2] != sh->h || a->dims[3] != sh->w))
			goto bad_shape;
	}
	if (a->ndim > 4)
		goto bad_shape;
	if (a->dtype != NQ_DT_U8 && a->dtype != NQ_DT_F32 && a->dtype != NQ_DT_F64)
		return nq_fail(-EINVAL, "%s: calibration data of type %s (use u8, f32 or f64)", path,
			       nq_dtype_name(a->dtype));
	n = a->dims[0] < count ? (unsigned)a->dims[0] : count;
	for (unsigned s = 0; s < n; s++)
		for (unsigned c = 0; c < sh->c; c++)
			for (unsigned y = 0; y < sh->h; y++)
				for (unsigned xx = 0; xx < sh->w; xx++) {
					size_t src = (size_t)s * per +
						     (nhwc ? ((size_t)y * sh->w + xx) * sh->c + c
							   : ((size_t)c * sh->h + y) * sh->w + xx);
					float v;

					if (a->dtype == NQ_DT_U8)
						v = ((const uint8_t *)a->data)[src];
					else if (a->dtype == NQ_DT_F32)
						v = ((const float *)a->data)[src];
					else
						v = (float)((const double *)a->data)[src];
					if (!isfinite(v))
						return nq_fail(-EINVAL, "%s: sample %u holds a NaN or infinity",
							       path, s);
					x[(size_t)s * per + ((size_t)c * sh->h + y) * sh->w + xx] = v * scale;
				}
	*n_out = n;
	return 0;
bad_shape:
	return nq_fail(-EINVAL, "%s: calibration data of rank %u [%llu, %llu, ...] does not fit the model input [N, %u, %u, %u]",
		       path, a->ndim, (unsigned long long)a->dims[0],
		       (unsigned long long)a->dims[1], sh->c, sh->h, sh->w);
}

/* ---- image folders ---------------------------------------------------- */

struct image {
	unsigned w, h, c;	/* c = 1 (grey) or 3 (RGB) */
	uint8_t *px;		/* h * w * c, interleaved */
};

struct jerr {
	struct jpeg_error_mgr mgr;
	jmp_buf jb;
	char msg[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr cinfo)
{
	struct jerr *e = (struct jerr *)cinfo->err;

	e->mgr.format_message(cinfo, e->msg);
	longjmp(e->jb, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level)
{
	(void)cinfo;
	(void)level;
}

static int load_jpeg(const char *path, struct image *im)
{
	struct jpeg_decompress_struct ci;
	struct jerr je;
	FILE *f;
	volatile int err = 0;

	memset(im, 0, sizeof(*im));
	f = fopen(path, "rb");
	if (!f)
		return nq_fail(-errno, "%s: %s", path, strerror(errno));
	ci.err = jpeg_std_error(&je.mgr);
	je.mgr.error_exit = jpeg_fail;
	je.mgr.emit_message = jpeg_quiet;
	if (setjmp(je.jb)) {
		err = nq_fail(-EINVAL, "%s: bad JPEG: %s", path, je.msg);
		free(im->px);
		im->px = NULL;
		goto out;
	}
	jpeg_create_decompress(&ci);
	jpeg_stdio_src(&ci, f);
	jpeg_read_header(&ci, TRUE);
	ci.out_color_space = ci.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_start_decompress(&ci);
	im->w = ci.output_width;
	im->h = ci.output_height;
	im->c = (unsigned)ci.output_components;
	if (!im->w || !im->h || im->w > 16384 || im->h > 16384 || (im->c != 1 && im->c != 3)) {
		err = nq_fail(-EINVAL, "%s: JPEG of %ux%u with %u components is not supported", path,
			      im->w, im->h, im->c);
		goto out;
	}
	im->px = malloc((size_t)im->w * im->h * im->c);
	if (!im->px) {
		err = nq_fail(-ENOMEM, "%s: out of memory", path);
		goto out;
	}
	while (ci.output_scanline < ci.output_height) {
		JSAMPROW row = im->px + (size_t)ci.output_scanline * im->w * im->c;

		jpeg_read_scanlines(&ci, &row, 1);
	}
	jpeg_finish_decompress(&ci);
out:
	jpeg_destroy_decompress(&ci);
	fclose(f);
	return err;
}

static int load_png(const char *path, struct image *im)
{
	png_image p;

	memset(im, 0, sizeof(*im));
	memset(&p, 0, sizeof(p));
	p.version = PNG_IMAGE_VERSION;
	if (!png_image_begin_read_from_file(&p, path))
		return nq_fail(-EINVAL, "%s: bad PNG: %s", path, p.message);
	if (!p.width || !p.height || p.width > 16384 || p.height > 16384) {
		png_image_free(&p);
		return nq_fail(-EINVAL, "%s: PNG of %ux%u is not supported", path, p.width, p.height);
	}
	im->c = (p.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
	p.format = im->c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
	im->w = p.width;
	im->h = p.height;
	im->px = malloc(PNG_IMAGE_SIZE(p));
	if (!im->px) {
		png_image_free(&p);
		return nq_fail(-ENOMEM, "%s: out of memory", path);
	}
	if (!png_image_finish_read(&p, NULL, im->px, 0, NULL)) {
		free(im->px);
		im->px = NULL;
		return nq_fail(-EINVAL, "%s: bad PNG: %s", path, p.message);
	}
	return 0;
}

static bool has_ext(const char *name, const char *const *exts)
{
	const char *dot = strrchr(name, '.');

	if (!dot)
		return false;
	for (; *exts; exts++)
		if (!strcasecmp(dot + 1, *exts))
			return true;
	return false;
}

struct file_list {
	char **v;
	size_t n, cap;
};

static int list_images(const char *dir, struct file_list *fl, int depth)
{
	static const char *const exts[] = { "jpg", "jpeg", "png", NULL };
	struct dirent **ents = NULL;
	int n, err = 0;

	if (depth > 8)
		return 0;
	n = scandir(dir, &ents, NULL, alphasort);
	if (n < 0)
		return nq_fail(-errno, "%s: %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX];
		struct stat st;

		if (err || ents[i]->d_name[0] == '.')
			goto next;
		if (snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name) >= (int)sizeof(path))
			goto next;
		if (stat(path, &st))
			goto next;
		if (S_ISDIR(st.st_mode)) {
			err = list_images(path, fl, depth + 1);
		} else if (S_ISREG(st.st_mode) && has_ext(path, exts) && fl->n < MAX_FOLDER_FILES) {
			if (fl->n == fl->cap) {
				size_t cap = fl->cap ? fl->cap * 2 : 256;
				char **v = realloc(fl->v, cap * sizeof(*v));

				if (!v) {
					err = nq_fail(-ENOMEM, "out of memory listing %s", dir);
					goto next;
				}
				fl->v = v;
				fl->cap = cap;
			}
			fl->v[fl->n] = strdup(path);
			if (!fl->v[fl->n])
				err = nq_fail(-ENOMEM, "out of memory listing %s", dir);
			else
				fl->n++;
		}
next:
		free(ents[i]);
	}
	free(ents);
	return err;
}

static float sample_bilinear(const struct image *im, float fx, float fy, unsigned c)
{
	int x0 = (int)floorf(fx), y0 = (int)floorf(fy);
	float ax = fx - (float)x0, ay = fy - (float)y0;
	int x1 = x0 + 1, y1 = y0 + 1;
	int W = (int)im->w, H = (int)im->h;

	x0 = x0 < 0 ? 0 : x0 >= W ? W - 1 : x0;
	x1 = x1 < 0 ? 0 : x1 >= W ? W - 1 : x1;
	y0 = y0 < 0 ? 0 : y0 >= H ? H - 1 : y0;
	y1 = y1 < 0 ? 0 : y1 >= H ? H - 1 : y1;
#define PX(x, y) ((float)im->px[((size_t)(y) * im->w + (x)) * im->c + c])
	return (1 - ay) * ((1 - ax) * PX(x0, y0) + ax * PX(x1, y0)) +
	       ay * ((1 - ax) * PX(x0, y1) + ax * PX(x1, y1));
#undef PX
}

/*
 * The standard evaluation transform: resize the shorter side to
 * round(h * 256 / 224), centre-crop h x w, times `scale` (1/255: [0, 1]).
 * Resizing maps pixel centres (half-pixel offsets, as PIL/torchvision do).
 */
static void image_to_nchw(const struct image *im, const struct nq_calib_shape *sh, unsigned resize,
			  float vscale, float *out)
{
	float target = resize ? (float)resize : roundf((float)sh->h * 256.0f / 224.0f);
	float scale = target / (float)(im->w < im->h ? im->w : im->h);
	float rw = (float)im->w * scale, rh = (float)im->h * scale;
	float ox = floorf((rw - (float)sh->w) / 2), oy = floorf((rh - (float)sh->h) / 2);

	if (ox < 0)
		ox = 0;
	if (oy < 0)
		oy = 0;
	for (unsigned c = 0; c < sh->c; c++)
		for (unsigned y = 0; y < sh->h; y++)
			for (unsigned x = 0; x < sh->w; x++) {
				float fx = ((float)x + ox + 0.5f) / scale - 0.5f;
				float fy = ((float)y + oy + 0.5f) / scale - 0.5f;
				float v;

				if (sh->c == im->c)
					v = sample_bilinear(im, fx, fy, c);
				else if (im->c == 1)
					v = sample_bilinear(im, fx, fy, 0);
				else	/* colour image, grey model: average */
					v = (sample_bilinear(im, fx, fy, 0) +
					     sample_bilinear(im, fx, fy, 1) +
					     sample_bilinear(im, fx, fy, 2)) / 3.0f;
				out[((size_t)c * sh->h + y) * sh->w + x] = v * vscale;
			}
}

int nq_image_load(const char *path, const struct nq_calib_shape *sh, unsigned resize, float vscale,
		  float *out)
{
	struct image im;
	bool png = has_ext(path, (const char *const[]){ "png", NULL });
	int err;

	if (sh->c != 1 && sh->c != 3)
		return nq_fail(-EINVAL, "%s: images feed 1- or 3-channel inputs; the model has %u",
			       path, sh->c);
	err = png ? load_png(path, &im) : load_jpeg(path, &im);
	if (err)
		return err;
	image_to_nchw(&im, sh, resize, vscale, out);
	free(im.px);
	return 0;
}

int nq_image_list(const char *dir, char ***paths, size_t *n)
{
	struct file_list fl = { 0 };
	int err = list_images(dir, &fl, 0);

	if (err) {
		nq_image_list_free(fl.v, fl.n);
		return err;
	}
	*paths = fl.v;
	*n = fl.n;
	return 0;
}

void nq_image_list_free(char **paths, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
}

static int folder_inputs(const struct nq_convert_opts *o, const char *dir,
			 const struct nq_calib_shape *sh, unsigned count, float *x, unsigned *n_out)
{
	struct file_list fl = { 0 };
	uint64_t st = o->seed;
	size_t per = (size_t)sh->c * sh->h * sh->w;
	unsigned n = 0;
	int err;

	if (sh->c != 1 && sh->c != 3)
		return nq_fail(-EINVAL, "%s: image folders calibrate 1- or 3-channel inputs; the model has %u",
			       dir, sh->c);
	err = list_images(dir, &fl, 0);
	if (err)
		goto out;
	if (!fl.n) {
		err = nq_fail(-ENOENT, "%s: no .jpg/.jpeg/.png images found", dir);
		goto out;
	}
	/* A seeded shuffle, so a class-per-folder tree gives a mix of classes. */
	for (size_t i = fl.n - 1; i > 0; i--) {
		size_t j = splitmix(&st) % (i + 1);
		char *t = fl.v[i];

		fl.v[i] = fl.v[j];
		fl.v[j] = t;
	}
	for (size_t i = 0; i < fl.n && n < count; i++) {
		err = nq_image_load(fl.v[i], sh, 0, nq_convert_input_scale(&o->pre),
				    x + (size_t)n * per);
		if (err)
			goto out;
		n++;
	}
	*n_out = n;
out:
	for (size_t i = 0; i < fl.n; i++)
		free(fl.v[i]);
	free(fl.v);
	return err;
}

/* ---- entry point -------------------------------------------------------- */

int nq_calib_inputs(const struct nq_convert_opts *o, const struct nq_calib_shape *sh,
		    unsigned count, float **out, unsigned *n_out)
{
	size_t per = (size_t)sh->c * sh->h * sh->w;
	struct nq_array a = { 0 };
	struct nq_dataset ds = { 0 };
	struct stat st;
	float *x;
	unsigned n = 0;
	int err = 0;

	*out = NULL;
	*n_out = 0;
	if (!count || !per || per > ((size_t)1 << 28) || count > (1u << 20) ||
	    per > SIZE_MAX / sizeof(float) / count)
		return nq_fail(-EINVAL, "calibration: %u samples of %ux%ux%u is not a usable size",
			       count, sh->c, sh->h, sh->w);
	x = malloc((size_t)count * per * sizeof(*x));
	if (!x)
		return nq_fail(-ENOMEM, "calibration: out of memory for %u samples", count);

	switch (o->calib) {
	case NQ_CALIB_SRC_NONE:
		err = noise_inputs(o, sh, count, x);
		n = count;
		break;
	case NQ_CALIB_SRC_FASHION_MNIST:
		if (sh->c != 1 || sh->h != 28 || sh->w != 28) {
			err = nq_fail(-EINVAL, "--calib fashion-mnist: the model input is [N, %u, %u, %u], Fashion-MNIST images are [N, 1, 28, 28] (use --calib-data or --calib none)",
				      sh->c, sh->h, sh->w);
			break;
		}
		err = nq_dataset_load("fashion-mnist", "train", count, &ds);
		if (err)
			break;
		n = ds.count < count ? (unsigned)ds.count : count;
		/* The loader gives pixels / 255; the raw value is the pixel. */
		for (size_t i = 0; i < (size_t)n * per; i++)
			x[i] = rintf(ds.images[i] * 255.0f) * nq_convert_input_scale(&o->pre);
		break;
	case NQ_CALIB_SRC_PATH:
		if (!o->calib_path) {
			err = nq_fail(-EINVAL, "calibration: no data path given");
			break;
		}
		if (stat(o->calib_path, &st)) {
			err = nq_fail(-errno, "--calib-data %s: %s", o->calib_path, strerror(errno));
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			err = folder_inputs(o, o->calib_path, sh, count, x, &n);
			break;
		}
		{
			size_t len = strlen(o->calib_path);

			if (len > 4 && !strcasecmp(o->calib_path + len - 4, ".npy"))
				err = nq_npy_read(o->calib_path, &a);
			else
				err = nq_idx_read(o->calib_path, &a);
		}
		if (!err)
			err = array_inputs(&a, o->calib_path, o->pre.layout,
					   nq_convert_input_scale(&o->pre), sh, count, x, &n);
		break;
	default:
		err = nq_fail(-EINVAL, "calibration: unknown source %d", (int)o->calib);
	}
	if (!err && !n)
		err = nq_fail(-ENODATA, "calibration: no samples");
	if (!err)
		err = normalise(&o->pre, sh, x, n);
	nq_array_free(&a);
	nq_dataset_free(&ds);
	if (err) {
		free(x);
		return err;
	}
	*out = x;
	*n_out = n;
	return 0;
}
