/* Bit tricks, shifts, rotates, constant multiplies and divides, and mixed
 * signed/unsigned arithmetic at 32 and 64 bits. */
#include <stdint.h>

uint32_t popcount_manual(uint64_t x)
{
	uint32_t c = 0;

	while (x) {
		x &= x - 1;
		c++;
	}
	return c;
}

uint32_t bit_reverse32(uint32_t x)
{
	x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
	x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
	x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
	x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
	return (x >> 16) | (x << 16);
}

uint64_t rotate_mix(uint64_t x, uint64_t r)
{
	uint32_t lo = (uint32_t)x;
	unsigned r64 = (unsigned)r & 63, r32 = (unsigned)r & 31;
	uint64_t a = (x << r64) | (x >> ((64 - r64) & 63));
	uint32_t b = (lo >> r32) | (lo << ((32 - r32) & 31));

	return a ^ b;
}

/* Leading zeros of a 64-bit value by binary search (64 for zero). */
uint32_t clz_manual(uint64_t x)
{
	uint32_t n = 0;

	if (x == 0)
		return 64;
	if (!(x >> 32)) { n += 32; x <<= 32; }
	if (!(x >> 48)) { n += 16; x <<= 16; }
	if (!(x >> 56)) { n += 8; x <<= 8; }
	if (!(x >> 60)) { n += 4; x <<= 4; }
	if (!(x >> 62)) { n += 2; x <<= 2; }
	if (!(x >> 63)) { n += 1; }
	return n;
}

uint32_t parity64(uint64_t x)
{
	x ^= x >> 32;
	x ^= x >> 16;
	x ^= x >> 8;
	x ^= x >> 4;
	x ^= x >> 2;
	x ^= x >> 1;
	return (uint32_t)(x & 1);
}

/* Multiplies and divides by constants, signed and unsigned, 32 and 64 bit. */
uint64_t muldiv_const(int64_t s, uint64_t u)
{
	int32_t s32 = (int32_t)s;
	uint32_t u32 = (uint32_t)u;
	uint64_t r = 0;

	r += (uint64_t)(s / 7);
	r ^= (uint64_t)(s % 10) << 8;
	r += u / 3;
	r ^= (u % 1000) << 16;
	r += (uint64_t)(int64_t)(s32 / -5);
	r += (uint64_t)(u32 / 10u) << 1;
	r += u * 1000u;
	r += (uint64_t)((uint32_t)s32 * 37u);
	r ^= (uint64_t)(s >> 3);
	return r;
}

/* Guarded division: no zero divisor, no INT64_MIN / -1. */
int64_t safe_divmod(int64_t a, int64_t b)
{
	if (b == 0)
		return 0;
	if (b == -1)
		return (int64_t)((uint64_t)0 - (uint64_t)a);
	return a / b + (a % b) * 1000;
}

/* 32-bit guarded division, unsigned and signed. */
int32_t safe_div32(int32_t a, int32_t b)
{
	if (b == 0)
		return -1;
	if (b == -1)
		return (int32_t)(0u - (uint32_t)a);
	return (int32_t)((uint32_t)(a / b) ^ ((uint32_t)a / (uint32_t)b));
}

/* Bit mask of signed and unsigned comparisons at 64 and 32 bits. */
uint32_t cmp_mix(int64_t a, int64_t b)
{
	uint32_t m = 0;

	m |= (uint32_t)(a < b) << 0;
	m |= (uint32_t)((uint64_t)a < (uint64_t)b) << 1;
	m |= (uint32_t)(a <= b) << 2;
	m |= (uint32_t)((uint64_t)a >= (uint64_t)b) << 3;
	m |= (uint32_t)((int32_t)a < (int32_t)b) << 4;
	m |= (uint32_t)((uint32_t)a < (uint32_t)b) << 5;
	m |= (uint32_t)(a == b) << 6;
	m |= (uint32_t)((int32_t)a > (int32_t)b) << 7;
	return m;
}

/* Mixed 32-bit arithmetic with wrap-around, sign and zero extension. */
int64_t arith32_mix(int32_t a, int32_t b)
{
	uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
	uint32_t x = ua * ub + (ua >> 3) - (ub << 5);
	int32_t y = (int32_t)x >> 7;

	return (int64_t)y + (int64_t)(uint64_t)(x ^ 0x9e3779b9u);
}

/* 64-bit arithmetic: multiply-high emulation, arithmetic shift, and/or/xor. */
uint64_t arith64_mix(uint64_t a, uint64_t b)
{
	uint64_t alo = a & 0xffffffffu, ahi = a >> 32;
	uint64_t blo = b & 0xffffffffu, bhi = b >> 32;
	uint64_t mid = ahi * blo + (alo * blo >> 32);
	uint64_t hi = ahi * bhi + (mid >> 32) + ((alo * bhi + (mid & 0xffffffffu)) >> 32);
	int64_t sa = (int64_t)a >> 13;

	return hi ^ (uint64_t)sa ^ (a | b) ^ ((a & b) << 1);
}
