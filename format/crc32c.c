// SPDX-License-Identifier: MIT
/*
 * CRC32C (Castagnoli, reflected 0x82F63B78).  The instruction is chosen at
 * run time, not compile time, so one binary serves CPUs with and without it:
 * SSE4.2 `crc32` on x86-64, the ARMv8 CRC extension on arm64 (optional before
 * ARMv8.1), and a slicing-by-8 table everywhere else.
 */
#include <stdint.h>
#include <string.h>

#include "nq_format.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

static uint32_t table[8][256];
static int table_ready;		/* 0 = not built; built idempotently */

static void build_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int j = 0; j < 8; j++)
			c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
	__atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t nq_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Two threads may build the table at once; they write the same values. */
	if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
		build_table();
	crc = ~crc;
	while (len && ((uintptr_t)p & 7)) {
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
		len--;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		v ^= crc;
		crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^
		      table[5][(v >> 16) & 0xff] ^ table[4][(v >> 24) & 0xff] ^
		      table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
		      table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

static int hw_available(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
}
#define HW_NAME "sse4.2"

#elif defined(__aarch64__)
#include <arm_acle.h>

__attribute__((target("+crc")))
static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = __crc32cb(c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = __crc32cd(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __crc32cb(c, *p++);
	return ~c;
}

static int hw_available(void)
{
	return !!(getauxval(AT_HWCAP) & HWCAP_CRC32);
}
#define HW_NAME "armv8-crc"

#else
static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	return nq_crc32c_sw(crc, buf, len);
}

static int hw_available(void)
{
	return 0;
}
#define HW_NAME "table"
#endif

/* 0 = not probed yet, 1 = table, 2 = instruction.  Probing is idempotent. */
static int impl;

static int choose(void)
{
	int v = __atomic_load_n(&impl, __ATOMIC_RELAXED);

	if (!v) {
		v = hw_available() ? 2 : 1;
		__atomic_store_n(&impl, v, __ATOMIC_RELAXED);
	}
	return v;
}

uint32_t nq_crc32c(uint32_t crc, const void *buf, size_t len)
{
	if (choose() == 2)
		return crc32c_hw(crc, buf, len);
	return nq_crc32c_sw(crc, buf, len);
}

const char *nq_crc32c_impl(void)
{
	return choose() == 2 ? HW_NAME : "table";
}
