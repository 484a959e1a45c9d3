/*
 * String and memory helpers in the style of lib/string.c, byte at a time.
 */
#include "kernel.h"

size_t strlen(const char *s)
{
	const char *p = s;

	while (*p)
		p++;
	return p - s;
}

size_t strnlen(const char *s, size_t count)
{
	size_t n = 0;

	while (n < count && s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	unsigned char x, y;

	do {
		x = *a++;
		y = *b++;
		if (x != y)
			return x < y ? -1 : 1;
	} while (x);
	return 0;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *p = a, *q = b;

	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p - *q;
	return 0;
}

void *memchr(const void *s, int c, size_t n)
{
	const unsigned char *p = s;

	for (; n; n--, p++)
		if (*p == (unsigned char)c)
			return (void *)p;
	return 0;
}

/* The other static helper: same name as math.c's, different body. */
static noinline unsigned long helper(unsigned long x)
{
	return (x ^ 0x5a) << 1;
}

unsigned long string_helper(unsigned long x)
{
	return helper(x) + 5;
}
