// SPDX-License-Identifier: GPL-2.0
/*
 * nestquant.ko: the misc device /dev/nestquant.
 *
 * Purgeable memory for the residual planes of NestQuant models: the kernel
 * frees unpinned regions in its own reclaim, and the runtime keeps serving
 * at the lower level.  Ioctl arguments are validated here and in
 * nq_region.c; nestquant_uapi.h documents the contract.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/uaccess.h>

#include "nq_kmod.h"

unsigned int nq_max_region_mb = 1024;
module_param_named(max_region_mb, nq_max_region_mb, uint, 0644);
MODULE_PARM_DESC(max_region_mb, "Largest region, MiB (default 1024)");

unsigned int nq_max_total_mb = 4096;
module_param_named(max_total_mb, nq_max_total_mb, uint, 0644);
MODULE_PARM_DESC(max_total_mb, "All regions together, MiB (default 4096)");

static int nq_open(struct inode *inode, struct file *file)
{
	struct nq_region *r = nq_region_alloc();

	if (!r)
		return -ENOMEM;
	file->private_data = r;
	return 0;
}

static int nq_release(struct inode *inode, struct file *file)
{
	nq_region_release(file->private_data);
	return 0;
}

static long nq_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct nq_region *r = file->private_data;
	void __user *uarg = (void __user *)arg;
	union {
		struct nq_kmod_create create;
		struct nq_kmod_fill fill;
		struct nq_kmod_info info;
		struct nq_kmod_stats stats;
	} u;
	int err;

	switch (cmd) {
	case NQ_KMOD_IOC_CREATE:
		if (copy_from_user(&u.create, uarg, sizeof(u.create)))
			return -EFAULT;
		err = nq_region_create(r, file, &u.create);
		/* On -EFAULT here the region exists; INFO tells its offsets. */
		if (!err && copy_to_user(uarg, &u.create, sizeof(u.create)))
			err = -EFAULT;
		return err;
	case NQ_KMOD_IOC_FILL:
		if (copy_from_user(&u.fill, uarg, sizeof(u.fill)))
			return -EFAULT;
		return nq_region_fill(r, &u.fill);
	case NQ_KMOD_IOC_PUBLISH:
		if (arg)
			return -EINVAL;
		return nq_region_publish(r);
	case NQ_KMOD_IOC_INFO:
		err = nq_region_info(r, &u.info);
		if (!err && copy_to_user(uarg, &u.info, sizeof(u.info)))
			err = -EFAULT;
		return err;
	case NQ_KMOD_IOC_STATS:
		nq_stats_read(&u.stats);
		if (copy_to_user(uarg, &u.stats, sizeof(u.stats)))
			return -EFAULT;
		return 0;
	default:
		return -ENOTTY;
	}
}

static int nq_mmap(struct file *file, struct vm_area_struct *vma)
{
	return nq_region_mmap(file->private_data, vma);
}

/* Level-triggered: EPOLLPRI from a purge until the next PUBLISH. */
static __poll_t nq_poll(struct file *file, poll_table *wait)
{
	struct nq_region *r = file->private_data;

	poll_wait(file, &r->wait, wait);
	return READ_ONCE(r->purge_pending) ? EPOLLPRI : 0;
}

static const struct file_operations nq_fops = {
	.owner = THIS_MODULE,
	.open = nq_open,
	.release = nq_release,
	.unlocked_ioctl = nq_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = nq_mmap,
	.poll = nq_poll,
	.llseek = noop_llseek,
};

static struct miscdevice nq_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "nestquant",
	.fops = &nq_fops,
	.mode = 0666,
};

static int __init nq_init(void)
{
	int err;

	err = nq_region_init_module();
	if (err)
		return err;
	err = nq_shrinker_init();
	if (err)
		goto err_region;
	err = misc_register(&nq_misc);
	if (err)
		goto err_shrinker;
	return 0;

err_shrinker:
	nq_shrinker_exit();
err_region:
	nq_region_exit_module();
	return err;
}

/*
 * Every open file holds a module reference (fops owner), and every mapping
 * holds its file, so no region is alive here: rmmod with a region open or
 * mapped fails with EBUSY.
 */
static void __exit nq_exit(void)
{
	misc_deregister(&nq_misc);
	nq_shrinker_exit();
	nq_region_exit_module();
}

module_init(nq_init);
module_exit(nq_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("NestQuant");
MODULE_DESCRIPTION("Purgeable residual-plane regions reclaimed by a shrinker");
