/* Recursive functions.  Every argument that drives recursion is clamped so
 * the depth is bounded whatever integer the caller passes. */
#include <stdint.h>

uint64_t factorial(uint64_t n)
{
	n &= 15;
	if (n < 2)
		return 1;
	return n * factorial(n - 1);
}

__attribute__((noinline)) uint64_t fibonacci(uint64_t n)
{
	n &= 15;
	if (n < 2)
		return n;
	return fibonacci(n - 1) + fibonacci(n - 2);
}

static uint64_t ack(uint64_t m, uint64_t n, uint32_t *budget)
{
	if (*budget == 0)
		return 0;
	(*budget)--;
	if (m == 0)
		return n + 1;
	if (n == 0)
		return ack(m - 1, 1, budget);
	return ack(m - 1, ack(m, n - 1, budget), budget);
}

/* Ackermann function on tiny inputs: m in 0..2, n in 0..3; a call budget
 * bounds the work as well as the depth. */
uint64_t ackermann_small(uint64_t m, uint64_t n)
{
	uint32_t budget = 4096;

	return ack(m % 3, n & 3, &budget);
}

int64_t gcd(int64_t a, int64_t b)
{
	uint64_t x = a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a;
	uint64_t y = b < 0 ? (uint64_t)0 - (uint64_t)b : (uint64_t)b;

	if (y == 0)
		return (int64_t)x;
	return gcd((int64_t)y, (int64_t)(x % y));
}

/* Counts the moves of a Towers of Hanoi solution by real double recursion. */
__attribute__((noinline)) uint32_t hanoi_moves(uint32_t disks)
{
	disks &= 15;
	if (disks == 0)
		return 0;
	return hanoi_moves(disks - 1) + 1 + hanoi_moves(disks - 1);
}

/* Modular exponentiation by recursive squaring (modulus forced nonzero). */
uint64_t power_mod(uint64_t base, uint64_t exp, uint64_t mod)
{
	uint64_t half;

	mod = (mod & 0xffff) | 1;
	exp &= 0xffffffff;
	if (exp == 0)
		return 1 % mod;
	half = power_mod(base, exp >> 1, mod);
	half = (half * half) % mod;
	if (exp & 1)
		half = (half * (base % mod)) % mod;
	return half;
}

/* Mutual recursion on a clamped counter. */
static int is_odd_rec(uint32_t n);

__attribute__((noinline)) int is_even_rec(uint32_t n)
{
	n &= 63;
	return n == 0 ? 1 : is_odd_rec(n - 1);
}

static int is_odd_rec(uint32_t n)
{
	return n == 0 ? 0 : is_even_rec(n - 1);
}
