/* Global state in .data, .bss and .rodata; small structs passed by pointer;
 * linked lists laid out in a caller-provided buffer. */
#include <stddef.h>
#include <stdint.h>

/* .data */
uint32_t g_counter = 5;
uint64_t g_seed = 0x123456789abcdefull;
int32_t g_weights[8] = { 3, -1, 4, -1, 5, -9, 2, 6 };

/* .bss */
uint32_t g_hist[16];
uint64_t g_last;

/* .rodata */
const uint16_t k_primes[32] = {
	2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53,
	59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131,
};
const uint8_t k_sbox[16] = {
	0xc, 0x5, 0x6, 0xb, 0x9, 0x0, 0xa, 0xd, 0x3, 0xe, 0xf, 0x8, 0x4, 0x7, 0x1, 0x2,
};

/* Adds delta to the .data counter; returns the new value (mutates). */
uint32_t counter_bump(uint32_t delta)
{
	g_counter += delta & 0xff;
	return g_counter;
}

/* Linear congruential generator over the .data seed (mutates). */
uint64_t lcg_next(void)
{
	g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
	return g_seed >> 17;
}

/* Histogram of nibbles into the .bss table (mutates); returns a summary. */
uint64_t hist_add(const uint8_t *p, uint64_t n)
{
	uint64_t h = 0;

	n &= 127;
	for (uint64_t i = 0; i < n; i++) {
		g_hist[p[i] & 15]++;
		g_hist[p[i] >> 4]++;
	}
	for (int i = 0; i < 16; i++)
		h = h * 3 + g_hist[i];
	g_last = h;
	return h;
}

/* Reads the .rodata prime table. */
uint32_t prime_at(uint64_t i)
{
	return k_primes[i & 31];
}

/* 4-bit S-box substitution of a 64-bit value using the .rodata table. */
uint64_t sbox_subst(uint64_t x)
{
	uint64_t r = 0;

	for (int i = 0; i < 64; i += 4)
		r |= (uint64_t)k_sbox[(x >> i) & 15] << i;
	return r;
}

/* Dot product of 8 int32 values with the .data weights. */
int64_t weighted_sum(const int32_t *v)
{
	int64_t s = 0;

	for (int i = 0; i < 8; i++)
		s += (int64_t)v[i] * g_weights[i];
	return s;
}

struct point {
	int32_t x, y;
};

struct rect {
	struct point lo, hi;
	uint32_t flags;
};

/* Moves a point in place by (dx, dy); returns its Manhattan length. */
uint64_t point_move(struct point *p, int32_t dx, int32_t dy)
{
	int64_t x, y;

	p->x = (int32_t)((uint32_t)p->x + (uint32_t)dx);
	p->y = (int32_t)((uint32_t)p->y + (uint32_t)dy);
	x = p->x;
	y = p->y;
	return (uint64_t)(x < 0 ? -x : x) + (uint64_t)(y < 0 ? -y : y);
}

/* Area of a normalised rectangle; flags bit 0 asks for the perimeter. */
uint64_t rect_measure(const struct rect *r)
{
	int64_t x0 = r->lo.x, x1 = r->hi.x, y0 = r->lo.y, y1 = r->hi.y;
	uint64_t w = (uint64_t)(x1 > x0 ? x1 - x0 : x0 - x1);
	uint64_t h = (uint64_t)(y1 > y0 ? y1 - y0 : y0 - y1);

	return (r->flags & 1) ? 2 * (w + h) : w * h;
}

struct node {
	struct node *next;
	uint32_t value;
	uint32_t pad;
};

/* Builds a linked list of (count & 15) nodes inside buf in a scrambled
 * order, then walks it summing values.  Needs 256 bytes. */
uint64_t list_build_walk(void *buf, uint64_t count, uint64_t seed)
{
	struct node *nodes = buf;
	struct node *head = NULL;
	uint64_t sum = 0, pos = 0;

	count &= 15;
	for (uint64_t i = 0; i < count; i++) {
		struct node *n = &nodes[(i * 7 + seed) & 15];

		n->value = (uint32_t)(i * 13 + (seed & 0xff));
		n->next = head;
		head = n;
	}
	for (struct node *n = head; n; n = n->next)
		sum = sum * 3 + n->value + pos++;
	return sum;
}

/* Walks an index-linked list in buf: node i is the two bytes
 * buf[2i] (value) and buf[2i+1] (next index, 0xff ends).  At most 64 steps. */
uint32_t list_walk_idx(const uint8_t *buf, uint64_t start)
{
	uint32_t sum = 0;
	uint32_t i = (uint32_t)start & 127;

	for (int steps = 0; steps < 64 && i != 0xff; steps++) {
		sum = sum * 7 + buf[2 * i];
		i = buf[2 * i + 1];
		if (i != 0xff)
			i &= 127;
	}
	return sum;
}

uint64_t fibonacci(uint64_t n);
uint64_t dense_switch(uint64_t sel, uint64_t x);
uint32_t popcount_manual(uint64_t x);

/* The image entry point: a pure function of the other functions. */
uint64_t corpus_entry(void)
{
	return fibonacci(10) + dense_switch(6, 7) + popcount_manual(0xff00ff);
}
