/*
 * LoongArch64 instruction classes that a kprobe must simulate: PC-relative
 * address computation (PCADDI, PCALAU12I, PCADDU12I, PCADDU18I), B, BL,
 * conditional branches, JIRL, and BCEQZ/BCNEZ on FP condition flags.
 * LP64D ABI: arguments in $a0..$a2, result in $a0.
 */
	.text

/*
 * la_branches(a, b): BEQ BNE BLT BGE BLTU BGEU BEQZ BNEZ.  Bit k of the
 * result is set when branch k was NOT taken.
 */
	.globl	la_branches
	.type	la_branches,@function
	.p2align 2
la_branches:
	move	$t0, $zero
	beq	$a0, $a1, 1f
	ori	$t0, $t0, 0x1
1:	bne	$a0, $a1, 2f
	ori	$t0, $t0, 0x2
2:	blt	$a0, $a1, 3f
	ori	$t0, $t0, 0x4
3:	bge	$a0, $a1, 4f
	ori	$t0, $t0, 0x8
4:	bltu	$a0, $a1, 5f
	ori	$t0, $t0, 0x10
5:	bgeu	$a0, $a1, 6f
	ori	$t0, $t0, 0x20
6:	blt	$a1, $a0, 7f
	ori	$t0, $t0, 0x40
7:	bgeu	$a1, $a0, 8f
	ori	$t0, $t0, 0x80
8:	beqz	$a0, 9f
	ori	$t0, $t0, 0x100
9:	bnez	$a0, 10f
	ori	$t0, $t0, 0x200
10:	beqz	$a1, 11f
	ori	$t0, $t0, 0x400
11:	bnez	$a1, 12f
	ori	$t0, $t0, 0x800
12:	move	$a0, $t0
	ret
	.size	la_branches, .-la_branches

/* la_leaf(a, b): 5a + b, a plain callee. */
	.globl	la_leaf
	.type	la_leaf,@function
	.p2align 2
la_leaf:
	alsl.d	$a0, $a0, $a0, 2
	add.d	$a0, $a0, $a1
	ret
	.size	la_leaf, .-la_leaf

/*
 * la_jumps(sel, x): BL; PCADDU18I+JIRL $ra,$ra,0 (call36, the rd == rj ==
 * ra call); PCADDU12I+JIRL call; B forward and back; JIRL $zero through a
 * PCADDI-addressed jump table.
 */
	.globl	la_jumps
	.type	la_jumps,@function
	.p2align 2
la_jumps:
	addi.d	$sp, $sp, -32
	st.d	$ra, $sp, 24
	st.d	$s0, $sp, 16
	st.d	$s1, $sp, 8
	move	$s0, $a0
	move	$s1, $a1
	/* BL */
	move	$a0, $s1
	li.d	$a1, 1
	bl	la_leaf				/* 5x + 1 */
	move	$s1, $a0
	/* PCADDU18I $ra + JIRL $ra, $ra, 0 */
	move	$a0, $s1
	li.d	$a1, 2
	pcaddu18i $ra, %call36(la_leaf)
	jirl	$ra, $ra, 0
	move	$s1, $a0
	/* PCADDU12I + JIRL through $t0 */
	move	$a0, $s1
	li.d	$a1, 3
.Lhi_call:
	pcaddu12i $t0, %pcadd_hi20(la_leaf)
	addi.d	$t0, $t0, %pcadd_lo12(.Lhi_call)
	jirl	$ra, $t0, 0
	move	$s1, $a0
	/* B forward, then back when bit 0 of sel is set */
	andi	$t1, $s0, 1
	beqz	$t1, .Lnoback
	addi.d	$s1, $s1, 0x70
	b	.Lback_target
.Lfwd:
	addi.d	$s1, $s1, 0x300
	b	.Ldispatch
.Lback_target:
	addi.d	$s1, $s1, 5
	b	.Lfwd
.Lnoback:
	addi.d	$s1, $s1, 9
	/* JIRL $zero through a table of offsets */
.Ldispatch:
	andi	$t1, $s0, 6
	slli.d	$t1, $t1, 1			/* 4 * index */
	pcaddi	$t2, %pcrel_20(.Ljtab)
	ldx.w	$t3, $t2, $t1
	add.d	$t3, $t3, $t2
	jirl	$zero, $t3, 0
.Lj0:	addi.d	$s1, $s1, 0x11
	b	.Ljoin
.Lj1:	xori	$s1, $s1, 0x222
	b	.Ljoin
.Lj2:	slli.d	$s1, $s1, 1
	b	.Ljoin
.Lj3:	addi.d	$s1, $s1, -0x333
.Ljoin:
	move	$a0, $s1
	ld.d	$ra, $sp, 24
	ld.d	$s0, $sp, 16
	ld.d	$s1, $sp, 8
	addi.d	$sp, $sp, 32
	ret
	.size	la_jumps, .-la_jumps

	.p2align 2
.Ljtab:	.word	.Lj0 - .Ljtab, .Lj1 - .Ljtab, .Lj2 - .Ljtab, .Lj3 - .Ljtab

/*
 * la_pcrel_data(a, sel): PCALAU12I+ADDI.D / LD.D / ST.D with %pc_lo12,
 * PCADDI and PCADDU12I loads of .rodata, and PCADDU12I/PCADDU18I with
 * plain immediates checked against absolute addresses (the differences
 * are 0x1000 and 0x40000 when simulated right).  Writes only la_scratch,
 * before reading it.
 */
	.globl	la_pcrel_data
	.type	la_pcrel_data,@function
	.p2align 2
la_pcrel_data:
.Lp12:
	pcaddu12i $t0, 1
	la.abs	$t1, .Lp12
	sub.d	$t0, $t0, $t1			/* 0x1000 */
	add.d	$a0, $a0, $t0
.Lp18:
	pcaddu18i $t0, 1
	la.abs	$t1, .Lp18
	sub.d	$t0, $t0, $t1			/* 0x40000 */
	add.d	$a0, $a0, $t0
	pcalau12i $t2, %pc_hi20(la_rodata)
	ld.d	$t3, $t2, %pc_lo12(la_rodata)
	add.d	$a0, $a0, $t3
	pcalau12i $t2, %pc_hi20(la_scratch)
	st.d	$a0, $t2, %pc_lo12(la_scratch)
	andi	$a1, $a1, 1
	beqz	$a1, 1f
	pcaddi	$t4, %pcrel_20(la_rodata)
	ld.w	$t5, $t4, 8
	add.d	$a0, $a0, $t5
.Lhi_ld:
	pcaddu12i $t6, %pcadd_hi20(la_rodata)
	ld.w	$t7, $t6, %pcadd_lo12(.Lhi_ld)
	add.d	$a0, $a0, $t7
1:	pcalau12i $t8, %pc_hi20(la_scratch)
	addi.d	$t8, $t8, %pc_lo12(la_scratch)
	ld.d	$t8, $t8, 0
	xor	$a0, $a0, $t8
	slli.d	$t8, $t8, 3
	add.d	$a0, $a0, $t8
	ret
	.size	la_pcrel_data, .-la_pcrel_data

/*
 * la_fcc(a, b, c): BCEQZ/BCNEZ on flags set by FCMP (a < b and a == b as
 * doubles converted from the integers) and by MOVGR2CF (bit 0 of c).  Bit
 * k of the result is set when branch k was NOT taken.
 */
	.globl	la_fcc
	.type	la_fcc,@function
	.p2align 2
la_fcc:
	move	$t0, $zero
	movgr2fr.d $fa0, $a0
	ffint.d.l $fa0, $fa0
	movgr2fr.d $fa1, $a1
	ffint.d.l $fa1, $fa1
	fcmp.clt.d $fcc0, $fa0, $fa1
	fcmp.ceq.d $fcc2, $fa0, $fa1
	movgr2cf $fcc1, $a2
	bceqz	$fcc0, 1f
	ori	$t0, $t0, 0x1
1:	bcnez	$fcc0, 2f
	ori	$t0, $t0, 0x2
2:	bceqz	$fcc1, 3f
	ori	$t0, $t0, 0x4
3:	bcnez	$fcc1, 4f
	ori	$t0, $t0, 0x8
4:	bcnez	$fcc2, 5f
	ori	$t0, $t0, 0x10
5:	movcf2gr $t1, $fcc2
	slli.d	$t1, $t1, 8
	or	$a0, $t0, $t1
	ret
	.size	la_fcc, .-la_fcc

	.section .rodata
	.p2align 3
la_rodata:
	.dword	0x0123456789abcdef
	.word	-77777
	.word	4321

	.data
	.p2align 3
	.globl	la_scratch
la_scratch:
	.dword	0
