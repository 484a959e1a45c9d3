/*
 * Shared declarations of the kernel-shaped test images: fixed-width types,
 * the per-CPU section attribute and the library functions' prototypes.
 */
#ifndef KIMAGE_KERNEL_H
#define KIMAGE_KERNEL_H

typedef __SIZE_TYPE__ size_t;
typedef unsigned long u64;
typedef unsigned int u32;

#define noinline __attribute__((noinline))
#define __used __attribute__((used))
/* A per-CPU variable: linked into .data..percpu, which the images place at address 0. */
#define DEFINE_PER_CPU(type, name) \
	__attribute__((section(".data..percpu"))) __used type name

/* Code kprobes must not touch: in .kprobes.text, or listed by NOKPROBE_SYMBOL. */
#define __kprobes __attribute__((section(".kprobes.text")))
#define NOKPROBE_SYMBOL(fname) \
	static unsigned long __used __attribute__((section("_kprobe_blacklist"))) \
	_kbl_addr_##fname = (unsigned long)fname

typedef int (*cmp_func_t)(const void *, const void *);
typedef void (*swap_func_t)(void *, void *, int);

unsigned long gcd(unsigned long a, unsigned long b);
unsigned long lcm(unsigned long a, unsigned long b);
unsigned long int_sqrt(unsigned long x);
u64 int_pow(u64 base, unsigned int exp);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t count);
int strcmp(const char *a, const char *b);
int memcmp(const void *a, const void *b, size_t n);
void *memchr(const void *s, int c, size_t n);
void sort(void *base, size_t num, size_t size, cmp_func_t cmp, swap_func_t swap);
void *bsearch(const void *key, const void *base, size_t num, size_t size, cmp_func_t cmp);
int cmp_int(const void *a, const void *b);
void swap_words(void *a, void *b, int size);

#endif
