/*
 * x86_64 instruction classes that a kprobe must simulate or relocate.
 * SysV ABI: arguments in rdi, rsi, rdx; result in rax.  Each function
 * folds the paths it took into its result, so a mis-simulated branch
 * changes what it returns.
 */
	.text

/*
 * x86_jcc_short(a, b): one rel8 Jcc per condition; bit k of the result is
 * set when condition k was NOT taken (its "or" ran).
 */
	.globl	x86_jcc_short
	.type	x86_jcc_short,@function
	.p2align 4
x86_jcc_short:
	xorl	%eax, %eax
	cmpq	%rsi, %rdi
	jg	1f
	orl	$0x1, %eax
1:	cmpq	%rsi, %rdi
	jle	2f
	orl	$0x2, %eax
2:	cmpq	%rsi, %rdi
	jl	3f
	orl	$0x4, %eax
3:	cmpq	%rsi, %rdi
	jge	4f
	orl	$0x8, %eax
4:	cmpq	%rsi, %rdi
	ja	5f
	orl	$0x10, %eax
5:	cmpq	%rsi, %rdi
	jb	6f
	orl	$0x20, %eax
6:	cmpq	%rsi, %rdi
	je	7f
	orl	$0x40, %eax
7:	cmpq	%rsi, %rdi
	jne	8f
	orl	$0x80, %eax
8:	movq	%rdi, %rcx
	addq	%rsi, %rcx		/* signed overflow of a + b */
	jo	9f
	orl	$0x100, %eax
9:	movq	%rdi, %rcx
	subq	%rsi, %rcx		/* sign of a - b */
	js	10f
	orl	$0x200, %eax
10:	movq	%rdi, %rcx
	xorq	%rsi, %rcx		/* parity of the low byte of a ^ b */
	jp	11f
	orl	$0x400, %eax
11:	testq	%rdi, %rdi
	jns	12f
	orl	$0x800, %eax
12:	cmpq	%rsi, %rdi
	jbe	13f
	orl	$0x1000, %eax
13:	cmpq	%rsi, %rdi
	jae	14f
	orl	$0x2000, %eax
14:	movq	%rdi, %rcx
	addq	%rsi, %rcx
	jno	15f
	orl	$0x4000, %eax
15:	movq	%rdi, %rcx
	xorq	%rsi, %rcx
	jnp	16f
	orl	$0x8000, %eax
16:	ret
	.size	x86_jcc_short, .-x86_jcc_short

/*
 * x86_jcc_near(a, b): the same conditions with rel32 Jcc (each jumps over
 * 128 bytes of NOPs, too far for rel8).  Bit k set when condition k was
 * not taken.
 */
	.globl	x86_jcc_near
	.type	x86_jcc_near,@function
	.p2align 4
x86_jcc_near:
	xorl	%eax, %eax
	cmpq	%rsi, %rdi
	jg	1f
	orl	$0x1, %eax
	.fill	128, 1, 0x90
1:	cmpq	%rsi, %rdi
	jle	2f
	orl	$0x2, %eax
	.fill	128, 1, 0x90
2:	cmpq	%rsi, %rdi
	jl	3f
	orl	$0x4, %eax
	.fill	128, 1, 0x90
3:	cmpq	%rsi, %rdi
	jge	4f
	orl	$0x8, %eax
	.fill	128, 1, 0x90
4:	cmpq	%rsi, %rdi
	ja	5f
	orl	$0x10, %eax
	.fill	128, 1, 0x90
5:	cmpq	%rsi, %rdi
	jb	6f
	orl	$0x20, %eax
	.fill	128, 1, 0x90
6:	movq	%rdi, %rcx
	addq	%rsi, %rcx
	jo	7f
	orl	$0x40, %eax
	.fill	128, 1, 0x90
7:	movq	%rdi, %rcx
	subq	%rsi, %rcx
	js	8f
	orl	$0x80, %eax
	.fill	128, 1, 0x90
8:	movq	%rdi, %rcx
	xorq	%rsi, %rcx
	jp	9f
	orl	$0x100, %eax
	.fill	128, 1, 0x90
9:	cmpq	%rsi, %rdi
	jne	10f
	orl	$0x200, %eax
	.fill	128, 1, 0x90
10:	ret
	.size	x86_jcc_near, .-x86_jcc_near

/*
 * x86_add3(a, b, c): an ordinary leaf used as a direct and indirect callee.
 */
	.globl	x86_add3
	.type	x86_add3,@function
	.p2align 4
x86_add3:
	leaq	(%rdi,%rsi,2), %rax
	leaq	(%rax,%rdx,4), %rax
	ret
	.size	x86_add3, .-x86_add3

/*
 * x86_jmp_call(a): JMP rel8, JMP rel32, CALL rel32 and RET.  The value of
 * a picks which unconditional path runs.
 */
	.globl	x86_jmp_call
	.type	x86_jmp_call,@function
	.p2align 4
x86_jmp_call:
	pushq	%rbx
	movq	%rdi, %rbx
	movq	%rdi, %rsi
	movl	$3, %edx
	call	x86_add3		/* rax = a + 2a + 12 */
	testb	$1, %bl
	jnz	2f
	addq	$0x100, %rax
	jmp	1f			/* rel8 */
	.fill	16, 1, 0x90
1:	addq	$0x1000, %rax
	jmp	3f			/* rel32: over 160 bytes of NOPs */
	.fill	160, 1, 0x90
2:	addq	$0x10000, %rax
3:	popq	%rbx
	ret
	.size	x86_jmp_call, .-x86_jmp_call

/*
 * x86_callee_pop16: special convention, NOT C-callable.  Takes two 64-bit
 * arguments on the stack (pushed by the caller: first the second one) and
 * pops them with RET imm16.  Returns 3 * [rsp+8] - [rsp+16].
 */
	.globl	x86_callee_pop16
	.type	x86_callee_pop16,@function
	.p2align 4
x86_callee_pop16:
	movq	8(%rsp), %rax
	leaq	(%rax,%rax,2), %rax
	subq	16(%rsp), %rax
	ret	$16
	.size	x86_callee_pop16, .-x86_callee_pop16

/*
 * x86_ret_imm(a, b): calls x86_callee_pop16(a, b) with stack arguments;
 * the callee's RET $16 rebalances the stack.  Returns the callee's result
 * plus a check that rsp came back unchanged (0 when balanced).
 */
	.globl	x86_ret_imm
	.type	x86_ret_imm,@function
	.p2align 4
x86_ret_imm:
	pushq	%rbx
	movq	%rsp, %rbx
	pushq	%rsi
	pushq	%rdi
	call	x86_callee_pop16
	subq	%rsp, %rbx		/* 0 when the callee popped 16 bytes */
	shlq	$40, %rbx
	addq	%rbx, %rax
	popq	%rbx
	ret
	.size	x86_ret_imm, .-x86_ret_imm

/*
 * x86_loops(n, v): JRCXZ (taken when n & 15 == 0), LOOP summing k..1,
 * then LOOPE and LOOPNE scans of the 8-byte table x86_bytes for the byte
 * v; the remaining counts are folded into the result.
 */
	.globl	x86_loops
	.type	x86_loops,@function
	.p2align 4
x86_loops:
	xorl	%eax, %eax
	movq	%rdi, %rcx
	andl	$15, %ecx
	jrcxz	2f
1:	addq	%rcx, %rax
	loop	1b
	jmp	3f
2:	movl	$1000, %eax
3:	leaq	x86_bytes(%rip), %rdx
	movl	$8, %ecx
4:	movzbl	(%rdx), %r8d
	leaq	1(%rdx), %rdx
	cmpb	%sil, %r8b
	loope	4b
	shlq	$4, %rax
	orq	%rcx, %rax
	leaq	x86_bytes(%rip), %rdx
	movl	$8, %ecx
5:	movzbl	(%rdx), %r8d
	leaq	1(%rdx), %rdx
	cmpb	%sil, %r8b
	loopne	5b
	shlq	$4, %rax
	orq	%rcx, %rax
	setz	%cl
	shlq	$4, %rax
	orb	%cl, %al
	ret
	.size	x86_loops, .-x86_loops

/*
 * x86_indirect(sel, x): CALL through a register, JMP through a register,
 * JMP through memory (jump table), CALL through memory (absolute table
 * and RIP-relative pointer), JMP through a RIP-relative pointer.
 */
	.globl	x86_indirect
	.type	x86_indirect,@function
	.p2align 4
x86_indirect:
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	movq	%rdi, %rbx
	movq	%rsi, %r12
	/* call *%reg */
	leaq	x86_add3(%rip), %r11
	movq	%r12, %rdi
	movl	$1, %esi
	movl	$2, %edx
	call	*%r11			/* x + 2 + 8 */
	movq	%rax, %r13
	/* call *table(,%reg,8) */
	movl	%ebx, %eax
	andl	$1, %eax
	movq	%r12, %rdi
	movq	%r13, %rsi
	xorl	%edx, %edx
	call	*x86_calltab(,%rax,8)
	movq	%rax, %r13
	/* call *ptr(%rip) */
	movq	%r13, %rdi
	movl	$5, %esi
	movl	$7, %edx
	call	*x86_fnptr(%rip)
	movq	%rax, %r13
	/* jmp *table(,%reg,8) */
	movl	%ebx, %eax
	andl	$3, %eax
	jmp	*x86_jmptab(,%rax,8)
.Lcase0:
	addq	$0x11, %r13
	jmp	.Ljoin
.Lcase1:
	xorq	$0x2222, %r13
	jmp	.Ljoin
.Lcase2:
	shlq	$1, %r13
	jmp	.Ljoin
.Lcase3:
	/* jmp *%reg */
	leaq	.Ljoin(%rip), %rcx
	subq	$0x333, %r13
	jmp	*%rcx
.Ljoin:
	/* jmp *ptr(%rip), to .Lafter, when bit 2 of sel is set */
	testb	$4, %bl
	jz	.Lafter
	addq	$0x40000, %r13
	jmp	*x86_jmpptr(%rip)
	ud2
.Lafter:
	movq	%r13, %rax
	popq	%r13
	popq	%r12
	popq	%rbx
	ret
	.size	x86_indirect, .-x86_indirect

/* x86_mul3(a, b, c): a * 3 + b - c; an indirect-call target. */
	.globl	x86_mul3
	.type	x86_mul3,@function
	.p2align 4
x86_mul3:
	leaq	(%rdi,%rdi,2), %rax
	addq	%rsi, %rax
	subq	%rdx, %rax
	ret
	.size	x86_mul3, .-x86_mul3

/*
 * x86_riprel(a, b): RIP-relative loads, stores, read-modify-writes and
 * LEA with 32/64-bit, 0x66-prefixed 16-bit, SSE, and immediate-after-
 * displacement forms.  Writes only the scratch globals x86_var*, and
 * stores into them before reading, so the result depends only on a, b.
 */
	.globl	x86_riprel
	.type	x86_riprel,@function
	.p2align 4
x86_riprel:
	movl	%edi, x86_var32(%rip)		/* store, 32-bit */
	movw	%si, x86_var16(%rip)		/* store, 0x66 prefix */
	movq	%rsi, x86_var64(%rip)		/* store, REX.W */
	addq	%rdi, x86_var64(%rip)		/* RMW, REX.W */
	movl	x86_var32(%rip), %eax		/* load */
	movzwl	x86_var16(%rip), %ecx		/* load, 16-bit */
	addw	x86_const16(%rip), %cx		/* 0x66 prefix ALU */
	movzwl	%cx, %ecx
	addq	%rcx, %rax
	addq	x86_var64(%rip), %rax		/* load, REX.W */
	imull	$7, x86_var32(%rip), %edx	/* imm8 after disp32 */
	addq	%rdx, %rax
	imull	$100000, x86_var32(%rip), %edx	/* imm32 after disp32 */
	xorq	%rdx, %rax
	xorl	%ecx, %ecx
	cmpl	$0x12345, x86_var32(%rip)	/* imm32 after disp32 */
	setl	%cl
	shlq	$1, %rcx
	cmpw	$0x1234, x86_var16(%rip)	/* 0x66, imm16 after disp32 */
	setae	%dl
	orb	%dl, %cl
	shlq	$1, %rcx
	cmpq	$-2, x86_var64(%rip)		/* REX.W, imm8 after disp32 */
	sete	%dl
	orb	%dl, %cl
	shlq	$56, %rcx
	xorq	%rcx, %rax
	movl	$0xabcdef, x86_var32(%rip)	/* store imm32 after disp32 */
	addl	x86_var32(%rip), %eax
	movq	x86_var64(%rip), %xmm0		/* SSE load */
	movdqu	x86_vec(%rip), %xmm1		/* SSE 128-bit load */
	paddq	%xmm1, %xmm0
	movq	%xmm0, x86_var64b(%rip)		/* SSE store */
	addq	x86_var64b(%rip), %rax
	leaq	x86_vec(%rip), %rcx		/* LEA */
	addq	8(%rcx), %rax
	ret
	.size	x86_riprel, .-x86_riprel

/*
 * x86_vex_riprel(a): VEX-encoded RIP-relative load and store.  Marked
 * not callable in functions.json: unicorn 2.1 has no AVX.
 */
	.globl	x86_vex_riprel
	.type	x86_vex_riprel,@function
	.p2align 4
x86_vex_riprel:
	vmovdqu	x86_vec(%rip), %xmm2
	vmovq	%rdi, %xmm3
	vpaddq	%xmm3, %xmm2, %xmm2
	vmovdqu	%xmm2, x86_vecout(%rip)
	vmovq	%xmm2, %rax
	ret
	.size	x86_vex_riprel, .-x86_vex_riprel

/*
 * x86_cmov_setcc(a, b): PUSH/POP of callee-saved registers, CMOVcc and
 * SETcc on signed and unsigned comparisons.
 */
	.globl	x86_cmov_setcc
	.type	x86_cmov_setcc,@function
	.p2align 4
x86_cmov_setcc:
	pushq	%rbx
	pushq	%r12
	pushq	%rbp
	movq	%rdi, %rax
	cmpq	%rsi, %rdi
	cmovlq	%rsi, %rax		/* signed max */
	movq	%rdi, %rbx
	cmovaq	%rsi, %rbx		/* unsigned min */
	movq	%rdi, %r12
	testq	%rsi, %rsi
	cmovsq	%rsi, %r12
	xorl	%ebp, %ebp
	cmpq	%rsi, %rdi
	setg	%bpl
	xorl	%ecx, %ecx
	cmpq	%rsi, %rdi
	setb	%cl
	leaq	(%rbp,%rcx,2), %rbp
	xorl	%ecx, %ecx
	cmpl	%esi, %edi
	sete	%cl
	leaq	(%rbp,%rcx,4), %rbp
	xorq	%rbx, %rax
	addq	%r12, %rax
	shlq	$3, %rax
	orq	%rbp, %rax
	popq	%rbp
	popq	%r12
	popq	%rbx
	ret
	.size	x86_cmov_setcc, .-x86_cmov_setcc

	.section .rodata
	.p2align 3
x86_jmptab:
	.quad	.Lcase0, .Lcase1, .Lcase2, .Lcase3
x86_calltab:
	.quad	x86_add3, x86_mul3
x86_fnptr:
	.quad	x86_mul3
x86_jmpptr:
	.quad	.Lafter
x86_const16:
	.short	0x7fff
x86_bytes:
	.byte	3, 3, 3, 3, 7, 7, 7, 9

	.data
	.p2align 4
x86_vec:
	.quad	0x0101010101010101, 0x0000000100000002
x86_vecout:
	.quad	0, 0
x86_var64:
	.quad	0
x86_var64b:
	.quad	0
x86_var32:
	.long	0
x86_var16:
	.short	0
