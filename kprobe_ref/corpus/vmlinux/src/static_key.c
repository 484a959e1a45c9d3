/*
 * A static branch and a WARN-style trap, each with its table entry in the
 * layout Linux reads: a __jump_table entry (code, target and key, PC-relative;
 * 16 bytes) for the branch's patchable no-op, and a __bug_table entry (trap
 * address PC-relative, file, line, flags; 12 bytes) for the trap instruction.
 * The branch is the file's default, disabled; the trap sits on a path only a
 * zero divisor takes.
 */
#include "kernel.h"

#if defined(__x86_64__)
#define JUMP_NOP ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00"
#define BUG_INSN "ud2"
#elif defined(__aarch64__)
#define JUMP_NOP "nop"
#define BUG_INSN "brk 0x800"
#elif defined(__riscv)
#define JUMP_NOP ".option push\n.option norvc\nnop\n.option pop"
#define BUG_INSN ".option push\n.option norvc\nebreak\n.option pop"
#elif defined(__loongarch__)
#define JUMP_NOP "nop"
#define BUG_INSN "break 1"
#endif

struct static_key {
	int enabled;
	long entries;
};

struct static_key trace_key;

static inline __attribute__((always_inline)) int trace_enabled(void)
{
	asm goto("1: " JUMP_NOP "\n\t"
		 ".pushsection __jump_table, \"aw\"\n\t"
		 ".balign 8\n\t"
		 ".long 1b - ., %l[l_yes] - .\n\t"
		 ".quad trace_key - .\n\t"
		 ".popsection"
		 : : : : l_yes);
	return 0;
l_yes:
	return 1;
}

/* a + b, plus 1000 when the (never enabled) trace key is on. */
unsigned long traced_add(unsigned long a, unsigned long b)
{
	if (trace_enabled())
		return a + b + 1000;
	return a + b;
}

/* a / b; a zero divisor reaches the WARN trap instead. */
unsigned long checked_div(unsigned long a, unsigned long b)
{
	if (b == 0) {
		asm volatile("1: " BUG_INSN "\n\t"
			     ".pushsection __bug_table, \"aw\"\n\t"
			     ".balign 4\n\t"
			     ".long 1b - ., 0\n\t"
			     ".short 0, 0\n\t"
			     ".popsection");
		return 0;
	}
	return a / b;
}
