/*
 * A heap sort with comparison and swap callbacks, the shape of lib/sort.c's
 * sort(), and a binary search over the sorted array.
 */
#include "kernel.h"

int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

void swap_words(void *a, void *b, int size)
{
	u32 *p = a, *q = b;

	for (; size > 0; size -= 4) {
		u32 t = *p;

		*p++ = *q;
		*q++ = t;
	}
}

static void sift_down(char *base, size_t root, size_t n, size_t size,
		      cmp_func_t cmp, swap_func_t swap)
{
	for (;;) {
		size_t child = 2 * root + 1;

		if (child >= n)
			return;
		if (child + 1 < n && cmp(base + child * size, base + (child + 1) * size) < 0)
			child++;
		if (cmp(base + root * size, base + child * size) >= 0)
			return;
		swap(base + root * size, base + child * size, (int)size);
		root = child;
	}
}

void sort(void *base, size_t num, size_t size, cmp_func_t cmp, swap_func_t swap)
{
	char *b = base;
	size_t i;

	for (i = num / 2; i-- > 0;)
		sift_down(b, i, num, size, cmp, swap);
	for (i = num; i-- > 1;) {
		swap(b, b + i * size, (int)size);
		sift_down(b, 0, i, size, cmp, swap);
	}
}

void *bsearch(const void *key, const void *base, size_t num, size_t size, cmp_func_t cmp)
{
	const char *b = base;

	while (num > 0) {
		const char *pivot = b + (num >> 1) * size;
		int r = cmp(key, pivot);

		if (r == 0)
			return (void *)pivot;
		if (r > 0) {
			b = pivot + size;
			num--;
		}
		num >>= 1;
	}
	return 0;
}
