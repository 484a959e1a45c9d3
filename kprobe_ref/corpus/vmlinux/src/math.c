/*
 * Integer helpers in the style of lib/math: Euclid's gcd, lcm, a bit-by-bit
 * integer square root and exponentiation by squaring.
 */
#include "kernel.h"

unsigned long gcd(unsigned long a, unsigned long b)
{
	while (b) {
		unsigned long r = a % b;

		a = b;
		b = r;
	}
	return a;
}

unsigned long lcm(unsigned long a, unsigned long b)
{
	if (a == 0 || b == 0)
		return 0;
	return (a / gcd(a, b)) * b;
}

unsigned long int_sqrt(unsigned long x)
{
	unsigned long bit, root = 0;

	if (x < 2)
		return x;
	bit = 1UL << ((63 - __builtin_clzl(x)) & ~1UL);
	while (bit) {
		if (x >= root + bit) {
			x -= root + bit;
			root = (root >> 1) + bit;
		} else {
			root >>= 1;
		}
		bit >>= 2;
	}
	return root;
}

u64 int_pow(u64 base, unsigned int exp)
{
	u64 acc = 1;

	while (exp) {
		if (exp & 1)
			acc *= base;
		exp >>= 1;
		base *= base;
	}
	return acc;
}

/* One of two static functions named helper: this one mixes with a multiply. */
static noinline unsigned long helper(unsigned long x)
{
	return x * 3 + 1;
}

unsigned long math_helper(unsigned long x)
{
	return helper(x) + 2;
}
