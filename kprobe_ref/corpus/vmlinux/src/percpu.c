/*
 * Per-CPU data at address 0, a table of function pointers that an ET_DYN
 * image carries as R_*_RELATIVE relocations, and two functions kprobes must
 * refuse: one listed by NOKPROBE_SYMBOL (its table word is relocated like the
 * pointer table's) and one in .kprobes.text.
 */
#include "kernel.h"

DEFINE_PER_CPU(int, pcpu_cpu_number) = 0;
DEFINE_PER_CPU(long, pcpu_counter) = 40;
DEFINE_PER_CPU(char, pcpu_name[16]) = "percpu-area";

/*
 * Pointers into the per-CPU area and into text, in writable data: in an
 * ET_DYN image each word is a RELATIVE relocation whose file bytes are zero.
 */
long *pcpu_counter_ptr = &pcpu_counter;
char *pcpu_name_ptr = pcpu_name;

typedef unsigned long (*op_t)(unsigned long, unsigned long);

static unsigned long op_add(unsigned long a, unsigned long b)
{
	return a + b;
}

static unsigned long op_sub(unsigned long a, unsigned long b)
{
	return a - b;
}

op_t ops_table[4] = { gcd, lcm, op_add, op_sub };

/* Call ops_table[i]: reaches the right function only once the table is relocated. */
unsigned long call_op(unsigned long i, unsigned long a, unsigned long b)
{
	return ops_table[i & 3](a, b);
}

/* this_cpu_add_return for CPU 0: the per-CPU area is where it was linked. */
long pcpu_add_return(long v)
{
#ifdef __x86_64__
	/* -mcmodel=kernel: a sign-extended 32-bit address reaches both 0 and the text. */
	pcpu_counter += v;
	return pcpu_counter;
#else
	*pcpu_counter_ptr += v;
	return *pcpu_counter_ptr;
#endif
}

size_t pcpu_name_len(void)
{
	return strlen(pcpu_name_ptr);
}

/* Listed in the _kprobe_blacklist table: never probed. */
noinline unsigned long nokprobe_add(unsigned long a, unsigned long b)
{
	return a + 2 * b;
}
NOKPROBE_SYMBOL(nokprobe_add);

/* In .kprobes.text: never probed. */
unsigned long __kprobes kprobes_text_mul(unsigned long a, unsigned long b)
{
	return a * b + 1;
}

void kernel_entry(void)
{
}
