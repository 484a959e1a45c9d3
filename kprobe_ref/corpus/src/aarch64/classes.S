/*
 * AArch64 instruction classes that a kprobe must simulate: branches,
 * compare-and-branch, test-and-branch, register branches, ADR/ADRP and
 * literal loads.  AAPCS64: arguments in x0..x2, result in x0.
 *
 * The kernel-style image is built without FP/SIMD for the C code (as
 * Linux builds arm64 with -mgeneral-regs-only); the literal loads into
 * s/d/q registers below turn the extensions back on for this file only.
 */
	.arch_extension fp
	.arch_extension simd
	.text

/*
 * a64_bcond(a, b): B.cond on several conditions; bit k of the result is
 * set when condition k was NOT taken.
 */
	.globl	a64_bcond
	.type	a64_bcond,@function
	.p2align 2
a64_bcond:
	mov	x9, xzr
	cmp	x0, x1
	b.eq	1f
	orr	x9, x9, #0x1
1:	b.ne	2f
	orr	x9, x9, #0x2
2:	b.lt	3f
	orr	x9, x9, #0x4
3:	b.ge	4f
	orr	x9, x9, #0x8
4:	b.gt	5f
	orr	x9, x9, #0x10
5:	b.le	6f
	orr	x9, x9, #0x20
6:	b.hi	7f
	orr	x9, x9, #0x40
7:	b.lo	8f
	orr	x9, x9, #0x80
8:	b.hs	9f
	orr	x9, x9, #0x100
9:	b.ls	10f
	orr	x9, x9, #0x200
10:	adds	x10, x0, x1
	b.vs	11f
	orr	x9, x9, #0x400
11:	b.vc	12f
	orr	x9, x9, #0x800
12:	b.mi	13f
	orr	x9, x9, #0x1000
13:	b.pl	14f
	orr	x9, x9, #0x2000
14:	adds	x10, x0, x1
	b.cs	15f			/* unsigned carry out of a + b */
	orr	x9, x9, #0x4000
15:	b.cc	16f
	orr	x9, x9, #0x8000
16:	mov	x0, x9
	ret
	.size	a64_bcond, .-a64_bcond

/* a64_leaf(a, b): a * 5 + b, a plain callee. */
	.globl	a64_leaf
	.type	a64_leaf,@function
	.p2align 2
a64_leaf:
	add	x0, x0, x0, lsl #2
	add	x0, x0, x1
	ret
	.size	a64_leaf, .-a64_leaf

/*
 * a64_b_bl(a): B forward and backward, BL to a64_leaf, RET through x30.
 * Bit 0 of a picks the path.
 */
	.globl	a64_b_bl
	.type	a64_b_bl,@function
	.p2align 2
a64_b_bl:
	stp	x29, x30, [sp, #-32]!
	mov	x29, sp
	str	x19, [sp, #16]
	mov	x19, x0
	mov	x1, #7
	bl	a64_leaf			/* x0 = 5a + 7 */
	tst	x19, #1
	b.ne	2f
	add	x0, x0, #0x100
	b	3f
1:	add	x0, x0, #0x1000			/* reached only by the backward B */
	b	4f
2:	add	x0, x0, #0x20
	b	1b
3:	nop
	add	x0, x0, #0x3
4:	ldr	x19, [sp, #16]
	ldp	x29, x30, [sp], #32
	ret
	.size	a64_b_bl, .-a64_b_bl

/*
 * a64_cb_tb(a, b): CBZ/CBNZ (w and x forms) and TBZ/TBNZ (low and high bit
 * numbers).  Bit k of the result is set when branch k was NOT taken.
 */
	.globl	a64_cb_tb
	.type	a64_cb_tb,@function
	.p2align 2
a64_cb_tb:
	mov	x9, xzr
	cbz	x0, 1f
	orr	x9, x9, #0x1
1:	cbnz	x0, 2f
	orr	x9, x9, #0x2
2:	cbz	w1, 3f
	orr	x9, x9, #0x4
3:	cbnz	w1, 4f
	orr	x9, x9, #0x8
4:	tbz	x0, #3, 5f
	orr	x9, x9, #0x10
5:	tbnz	x0, #3, 6f
	orr	x9, x9, #0x20
6:	tbz	x1, #40, 7f
	orr	x9, x9, #0x40
7:	tbnz	x1, #63, 8f
	orr	x9, x9, #0x80
8:	tbnz	w1, #0, 9f
	orr	x9, x9, #0x100
9:	mov	x0, x9
	ret
	.size	a64_cb_tb, .-a64_cb_tb

/*
 * a64_ret_x9: special convention, NOT C-callable.  Returns x0 + 0x55 to
 * the address in x9 with RET x9; x30 is left untouched.
 */
	.globl	a64_ret_x9
	.type	a64_ret_x9,@function
	.p2align 2
a64_ret_x9:
	add	x0, x0, #0x55
	ret	x9
	.size	a64_ret_x9, .-a64_ret_x9

/*
 * a64_indirect(sel, x): BR through an ADR-built jump table, BLR to a
 * callee, and RET x9 via a64_ret_x9.
 */
	.globl	a64_indirect
	.type	a64_indirect,@function
	.p2align 2
a64_indirect:
	stp	x29, x30, [sp, #-32]!
	mov	x29, sp
	stp	x19, x20, [sp, #16]
	mov	x19, x0
	mov	x20, x1
	/* BLR x16 */
	adr	x16, a64_leaf
	mov	x0, x20
	mov	x1, #9
	blr	x16				/* x0 = 5x + 9 */
	mov	x20, x0
	/* BR through a table of branch offsets */
	and	x10, x19, #3
	adr	x11, .Ltab
	ldrsw	x12, [x11, x10, lsl #2]
	add	x12, x11, x12
	br	x12
.Lc0:	add	x20, x20, #0x11
	b	.Ljoin
.Lc1:	eor	x20, x20, #0xff00
	b	.Ljoin
.Lc2:	lsl	x20, x20, #1
	b	.Ljoin
.Lc3:	sub	x20, x20, #0x333
.Ljoin:
	/* RET x9 to a continuation when bit 2 of sel is set */
	tbz	x19, #2, 1f
	mov	x0, x20
	adr	x9, 2f
	b	a64_ret_x9
2:	mov	x20, x0
1:	mov	x0, x20
	ldp	x19, x20, [sp, #16]
	ldp	x29, x30, [sp], #32
	ret
	.size	a64_indirect, .-a64_indirect

	.p2align 2
.Ltab:	.word	.Lc0 - .Ltab, .Lc1 - .Ltab, .Lc2 - .Ltab, .Lc3 - .Ltab

/*
 * a64_literals(sel): ADR, ADRP (+ :lo12: add and load), LDR (literal) into
 * w, x, s, d and q registers, LDRSW (literal), PRFM (literal) and NOP.
 * Bit 0 of sel adds the 32-bit literals, bit 1 the FP/SIMD ones; the
 * 64-bit literal and the ADRP-addressed .data word always count.
 */
	.globl	a64_literals
	.type	a64_literals,@function
	.p2align 2
a64_literals:
	prfm	pldl1keep, .Llit64
	nop
	ldr	x9, .Llit64
	adrp	x10, a64_data
	add	x10, x10, :lo12:a64_data
	ldr	x11, [x10]
	add	x9, x9, x11
	adrp	x12, a64_data
	ldr	x13, [x12, :lo12:a64_data + 8]
	add	x9, x9, x13
	adr	x14, .Llit64
	ldr	x15, [x14, #8]			/* .Llit32 via ADR */
	add	x9, x9, x15
	tbz	x0, #0, 1f
	ldr	w10, .Llit32
	add	x9, x9, x10
	ldrsw	x10, .Llitneg
	add	x9, x9, x10
1:	tbz	x0, #1, 2f
	ldr	s0, .Llit32
	fmov	w10, s0
	add	x9, x9, x10, lsl #4
	ldr	d1, .Llit64
	fmov	x10, d1
	eor	x9, x9, x10, lsl #1
	ldr	q2, .Llit128
	mov	x10, v2.d[0]
	add	x9, x9, x10
	mov	x10, v2.d[1]
	eor	x9, x9, x10
2:	mov	x0, x9
	ret
	.size	a64_literals, .-a64_literals

	.p2align 4
.Llit128:
	.quad	0x1111222233334444, 0x5555666677778888
.Llit64:
	.quad	0x0123456789abcdef
.Llit32:
	.word	0x7eadbeef
.Llitneg:
	.word	-12345

	.data
	.p2align 4
	.globl	a64_data
a64_data:
	.quad	0x1000, 0x20000
