/*
 * RV64GC instruction classes that a kprobe must simulate: conditional
 * branches, JAL/JALR, AUIPC, and the compressed C.J, C.JR, C.JALR, C.BEQZ
 * and C.BNEZ.  Arguments in a0..a2, result in a0.  Linker relaxation is
 * off here so AUIPC+JALR pairs stay as written.
 */
	.option	norelax
	.option	rvc
	.text

/*
 * rv_branches(a, b): BEQ BNE BLT BGE BLTU BGEU (32-bit forms) and
 * C.BEQZ/C.BNEZ (16-bit).  Bit k of the result is set when branch k was
 * NOT taken.
 */
	.globl	rv_branches
	.type	rv_branches,@function
	.p2align 1
rv_branches:
	li	t0, 0
	beq	a0, a1, 1f
	ori	t0, t0, 0x1
1:	bne	a0, a1, 2f
	ori	t0, t0, 0x2
2:	blt	a0, a1, 3f
	ori	t0, t0, 0x4
3:	bge	a0, a1, 4f
	ori	t0, t0, 0x8
4:	bltu	a0, a1, 5f
	ori	t0, t0, 0x10
5:	bgeu	a0, a1, 6f
	ori	t0, t0, 0x20
6:	blt	a1, a0, 7f
	ori	t0, t0, 0x40
7:	bgeu	a1, a0, 8f
	ori	t0, t0, 0x80
8:	c.beqz	a0, 9f
	ori	t0, t0, 0x100
9:	c.bnez	a0, 10f
	ori	t0, t0, 0x200
10:	c.beqz	a1, 11f
	ori	t0, t0, 0x400
11:	c.bnez	a1, 12f
	li	t1, 0x800
	or	t0, t0, t1
12:	mv	a0, t0
	ret
	.size	rv_branches, .-rv_branches

/* rv_leaf(a, b): 5a + b, a plain callee. */
	.globl	rv_leaf
	.type	rv_leaf,@function
	.p2align 1
rv_leaf:
	slli	t1, a0, 2
	add	a0, a0, t1
	add	a0, a0, a1
	ret
	.size	rv_leaf, .-rv_leaf

/*
 * rv_jumps(sel, x): JAL ra, AUIPC+JALR ra,lo(ra) (the rd == rs1 == ra
 * call), C.JALR, C.J forward and back, C.JR through a jump table and
 * JALR x0 (plain indirect jump).
 */
	.globl	rv_jumps
	.type	rv_jumps,@function
	.p2align 1
rv_jumps:
	addi	sp, sp, -32
	sd	ra, 24(sp)
	sd	s0, 16(sp)
	sd	s1, 8(sp)
	mv	s0, a0
	mv	s1, a1
	/* JAL ra */
	mv	a0, s1
	li	a1, 1
	jal	ra, rv_leaf			/* a0 = 5x + 1 */
	mv	s1, a0
	/* AUIPC ra + JALR ra, lo(ra) */
	mv	a0, s1
	li	a1, 2
.Lcall_hi:
	auipc	ra, %pcrel_hi(rv_leaf)
	jalr	ra, %pcrel_lo(.Lcall_hi)(ra)
	mv	s1, a0
	/* C.JALR a5 */
	mv	a0, s1
	li	a1, 3
	lla	a5, rv_leaf
	c.jalr	a5
	mv	s1, a0
	/* C.J forward, then back when bit 0 of sel is set */
	andi	a5, s0, 1
	c.beqz	a5, .Lnoback
	addi	s1, s1, 0x70
	c.j	.Lback_target
.Lfwd:
	addi	s1, s1, 0x300
	c.j	.Ldispatch
.Lback_target:
	addi	s1, s1, 0x5
	c.j	.Lfwd
.Lnoback:
	addi	s1, s1, 0x9
	/* C.JR through a table of offsets */
.Ldispatch:
	andi	t0, s0, 6
	slli	t0, t0, 1			/* (sel & 6) * 2 = 4 * index */
	lla	t1, .Ljtab
	add	t2, t1, t0
	lw	t2, 0(t2)
	add	t2, t2, t1
	c.jr	t2
.Lj0:	addi	s1, s1, 0x11
	j	.Ljoin
.Lj1:	xori	s1, s1, 0x222
	.option	push
	.option	norvc
	j	.Ljoin				/* 32-bit JAL x0 */
	.option	pop
.Lj2:	slli	s1, s1, 1
	j	.Ljoin
.Lj3:	addi	s1, s1, -0x333
	lla	t3, .Ljoin
	.option	push
	.option	norvc
	jalr	zero, 0(t3)			/* 32-bit JALR x0 */
	.option	pop
.Ljoin:
	mv	a0, s1
	ld	ra, 24(sp)
	ld	s0, 16(sp)
	ld	s1, 8(sp)
	addi	sp, sp, 32
	ret
	.size	rv_jumps, .-rv_jumps

	.p2align 2
.Ljtab:	.word	.Lj0 - .Ljtab, .Lj1 - .Ljtab, .Lj2 - .Ljtab, .Lj3 - .Ljtab

/*
 * rv_auipc_data(a, sel): AUIPC-based loads and stores of .data and
 * .rodata (ld/lw/sd with %pcrel_lo), and a plain AUIPC 1 checked against
 * the absolute address from LUI+ADDI (the difference is 0x1000).  Writes
 * only rv_scratch, before reading it.
 */
	.globl	rv_auipc_data
	.type	rv_auipc_data,@function
	.p2align 1
rv_auipc_data:
.Lpc0:
	auipc	t0, 1				/* t0 = rv_auipc_data + 0x1000 */
	lui	t1, %hi(.Lpc0)			/* absolute address, not PC-relative */
	addi	t1, t1, %lo(.Lpc0)
	sub	t0, t0, t1			/* 0x1000 when AUIPC was right */
.Lhi1:
	auipc	t1, %pcrel_hi(rv_rodata)
	ld	t2, %pcrel_lo(.Lhi1)(t1)
	add	a0, a0, t2
	add	a0, a0, t0
.Lhi2:
	auipc	t3, %pcrel_hi(rv_scratch)
	sd	a0, %pcrel_lo(.Lhi2)(t3)
	andi	a1, a1, 1
	beqz	a1, 1f
.Lhi3:
	auipc	t4, %pcrel_hi(rv_rodata + 8)
	lw	t5, %pcrel_lo(.Lhi3)(t4)
	add	a0, a0, t5
1:	lla	t6, rv_scratch
	ld	t6, 0(t6)
	xor	a0, a0, t6
	slli	t6, t6, 3
	add	a0, a0, t6
	ret
	.size	rv_auipc_data, .-rv_auipc_data

	.section .rodata
	.p2align 3
rv_rodata:
	.quad	0x0123456789abcdef
	.word	-77777
	.word	0

	.data
	.p2align 3
	.globl	rv_scratch
rv_scratch:
	.quad	0
