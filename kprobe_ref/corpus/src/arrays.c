/* Loops over caller-provided arrays.  Every length is clamped so the code
 * never leaves a 256-byte buffer. */
#include <stddef.h>
#include <stdint.h>

int64_t arr_sum(const int32_t *a, uint64_t n)
{
	int64_t s = 0;

	n &= 63;
	for (uint64_t i = 0; i < n; i++)
		s += a[i];
	return s;
}

int32_t arr_max(const int32_t *a, uint64_t n)
{
	int32_t m;

	n &= 63;
	if (n == 0)
		return -1;
	m = a[0];
	for (uint64_t i = 1; i < n; i++)
		if (a[i] > m)
			m = a[i];
	return m;
}

/* Reverses n bytes in place and returns a position-weighted checksum. */
uint32_t arr_reverse(uint8_t *a, uint64_t n)
{
	uint32_t h = 0;

	n &= 255;
	for (uint64_t i = 0, j = n; i + 1 < j; i++, j--) {
		uint8_t t = a[i];
		a[i] = a[j - 1];
		a[j - 1] = t;
	}
	for (uint64_t i = 0; i < n; i++)
		h = h * 31 + a[i];
	return h;
}

/* Bubble sort of 32-bit signed values; returns the number of swaps. */
uint32_t bubble_sort(int32_t *a, uint64_t n)
{
	uint32_t swaps = 0;
	int swapped = 1;

	n &= 31;
	while (swapped && n > 1) {
		swapped = 0;
		for (uint64_t i = 1; i < n; i++) {
			if (a[i - 1] > a[i]) {
				int32_t t = a[i - 1];
				a[i - 1] = a[i];
				a[i] = t;
				swaps++;
				swapped = 1;
			}
		}
		n--;
	}
	return swaps;
}

/* Insertion sort of unsigned 16-bit values; returns a checksum of the result. */
uint32_t insertion_sort(uint16_t *a, uint64_t n)
{
	uint32_t h = 0;

	n &= 63;
	for (uint64_t i = 1; i < n; i++) {
		uint16_t v = a[i];
		uint64_t j = i;

		while (j > 0 && a[j - 1] > v) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = v;
	}
	for (uint64_t i = 0; i < n; i++)
		h = (h << 3) ^ (h >> 29) ^ a[i];
	return h;
}

/* In-place prefix sums over 64-bit values; returns the total. */
uint64_t prefix_sums(uint64_t *a, uint64_t n)
{
	uint64_t acc = 0;

	n &= 31;
	for (uint64_t i = 0; i < n; i++) {
		acc += a[i];
		a[i] = acc;
	}
	return acc;
}

/* Copies n bytes inside one buffer: buf[128..] = buf[0..n]. */
uint64_t hand_memcpy(uint8_t *buf, uint64_t n)
{
	uint8_t *d = buf + 128;
	const uint8_t *s = buf;

	n &= 127;
	for (uint64_t i = 0; i < n; i++)
		d[i] = s[i];
	return n;
}

/* Fills buf[off & 127 .. +n & 127] with c; returns the sum of the whole first half. */
uint32_t hand_memset(uint8_t *buf, uint64_t off, uint64_t c, uint64_t n)
{
	uint32_t s = 0;
	uint8_t *p = buf + (off & 127);

	n &= 127;
	while (n--)
		*p++ = (uint8_t)c;
	for (int i = 0; i < 128; i++)
		s += buf[i];
	return s;
}

/* Compares buf[0..n] with buf[128..128+n]: -1, 0 or 1. */
int32_t hand_memcmp(const uint8_t *buf, uint64_t n)
{
	const uint8_t *a = buf, *b = buf + 128;

	n &= 127;
	for (uint64_t i = 0; i < n; i++) {
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	}
	return 0;
}

/* Length of the NUL-terminated string in buf, at most 255. */
uint64_t hand_strlen(const uint8_t *buf)
{
	uint64_t n = 0;

	while (n < 255 && buf[n] != 0)
		n++;
	return n;
}
