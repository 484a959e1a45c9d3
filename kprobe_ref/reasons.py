"""Stable reason codes for every verdict, with their meaning.

A decode-table row carries one of these codes.  The codes are part of the interface (the
audit report and CI jobs match on them); the wording may improve, the codes do not change.
``docs/verdicts.md`` is generated from this table.
"""

from __future__ import annotations

__all__ = ["REASONS", "describe"]

REASONS: dict[str, str] = {
    # -- stepped out of line ---------------------------------------------------------------
    "no-pc-use": "Neither reads nor writes the PC: runs unchanged in the out-of-line slot.",
    "rip-relative-operand": (
        "Has a RIP-relative memory operand: runs in the slot with its displacement rewritten "
        "so the operand addresses the same byte as at the original address."
    ),
    # -- simulated -------------------------------------------------------------------------
    "branch-relative": (
        "A PC-relative branch: in a slot it would branch relative to the slot and the "
        "end-of-step breakpoint would never run, so the handler computes the target."
    ),
    "branch-counted": "A counted branch (loop, jrcxz): the handler updates the counter and PC.",
    "call-relative": (
        "A PC-relative call: pushes or links its own address, so the handler computes the "
        "return address from the probe address and the target."
    ),
    "branch-indirect": "A branch through a register or memory: transfers control away.",
    "call-indirect": "A call through a register or memory: transfers control and links.",
    "return": "A return: transfers control to the saved return address.",
    "pc-relative-address": "Computes an address from the PC (adr, adrp, auipc, pcaddi...).",
    "pc-relative-load": "Loads from an address relative to the PC (a literal load).",
    "no-op": "Has no architectural effect; the handler only advances the PC.",
    # -- rejected --------------------------------------------------------------------------
    "exception-generating": (
        "Raises an exception or breakpoint itself (int3, int n, ud2, brk, ebreak...): it "
        "would re-enter the trap path or kill the task."
    ),
    "privilege-change": (
        "Changes privilege level or returns from an exception (iret, syscall, sysret, eret): "
        "the end-of-step trap would run in the wrong context."
    ),
    "far-transfer": "A far call, jump or return through a segment: not supported in 64-bit code.",
    "interrupt-shadow": (
        "mov ss / pop ss inhibit interrupts and debug traps for one instruction: the "
        "end-of-step breakpoint could be lost."
    ),
    "halts": "hlt stops the CPU until an interrupt: the end-of-step trap would not come.",
    "transactional": (
        "A transactional-memory instruction (xbegin, xabort, xend): a trap inside a "
        "transaction aborts it, and xbegin has a PC-relative fallback address."
    ),
    "operand-size-branch": (
        "A near branch with an operand-size (0x66) prefix: Intel ignores it, AMD truncates "
        "the target to 16 bits, so no single rule is right."
    ),
    "address-size-branch": (
        "A branch whose count or address uses a 32-bit address size (0x67 prefix): rare, and "
        "the width of the counter update is not modelled."
    ),
    "segment-relative-target": (
        "A memory-indirect branch through an fs/gs segment: the segment base is not part of "
        "the trap frame."
    ),
    "rip-relative-out-of-reach": (
        "The RIP-relative operand cannot reach its target from the slot it was given: the new "
        "displacement does not fit in a signed 32-bit field."
    ),
    "slot-out-of-reach": (
        "No address can hold the out-of-line slot: a relocation constraint of the ISA's reach "
        "rule holds nowhere in the memory the slot may come from, or the host placed the slot "
        "where one fails."
    ),
    "no-room-for-slots": (
        "Every place where the slot's relocation constraints hold is already mapped."
    ),
    "undecodable": "The bytes do not decode as a valid instruction.",
    "control-flow-unclassified": (
        "The decoder reports a control transfer or an implicit use of the PC that no row of "
        "the table simulates: stepped in a slot it would run relative to the slot."
    ),
    "inside-exclusive-sequence": (
        "Between a load-exclusive/load-linked and its store-conditional: the trap breaks the "
        "reservation, so the store always fails and the loop can livelock."
    ),
    "exclusive-access": (
        "A load-exclusive, store-exclusive, load-linked or store-conditional: a trap beside "
        "it breaks the reservation and can livelock."
    ),
    "aarch64-pointer-authentication": (
        "Authenticates a pointer (AUT* hints, BRAA/BLRAA/RETAA and their Z forms): the "
        "result depends on keys and, with FEAT_FPAC, a failed check faults in the slot."
    ),
    "aarch64-pstate-daif": (
        "MSR (immediate) writes a PSTATE field, and MSR/MRS DAIF write or read the interrupt "
        "mask, which the trap path itself changes: the step would act on the handler's state."
    ),
    "aarch64-mops": (
        "A FEAT_MOPS memory copy or set (CPY*, SET*): prologue, main and epilogue form one "
        "interruptible sequence whose progress lives in registers and PSTATE."
    ),
    "riscv64-csr-access": (
        "Reads or writes a control and status register (csrr*, csrw*, rdcycle...): CSRs "
        "hold the trap state the probe path itself uses and changes (status, epc, cause)."
    ),
    "riscv64-instruction-fetch-fence": (
        "fence.i orders instruction fetch after earlier stores: it belongs to code-patching "
        "sequences, which race with the probe's own patching of code."
    ),
    "loongarch64-atomic-memory-access": (
        "An AM* atomic read-modify-write (amswap, amadd, amcas... and their _db forms): "
        "refused as Linux refuses it (insns_not_supported). Each is one atomic "
        "instruction, but the _db forms are also barriers and the stepped copy would run "
        "with the trap path's memory ordering in between, so no step is offered."
    ),
    "loongarch64-csr-access": (
        "Reads or writes a control and status register (csrrd, csrwr, csrxchg, and the "
        "guest gcsr* forms): CSRs hold the trap state the probe path itself uses and "
        "changes (crmd, prmd, era, estat)."
    ),
    "loongarch64-iocsr-access": (
        "An IOCSR access (iocsrrd.*, iocsrwr.*): privileged device and inter-processor "
        "register access whose side effects a step cannot undo or repeat safely."
    ),
    "loongarch64-cache-maintenance": (
        "cacop maintains caches (including the instruction cache): it belongs to "
        "code-patching and DMA sequences, which race with the probe's own patching."
    ),
    "loongarch64-tlb-maintenance": (
        "A TLB maintenance or page-walk instruction (tlbclr, tlbflush, tlbsrch, tlbrd, "
        "tlbwr, tlbfill, invtlb, lddir, ldpte): privileged, acts on TLB CSR state that the "
        "trap path may change, and is used by the TLB refill handler itself."
    ),
    "loongarch64-lbt-jump": (
        "jiscr0/jiscr1 of the binary translation extension (and the reserved bceqz/bcnez "
        "forms beside them): PC-relative jumps that depend on LBT scratch state outside "
        "pt_regs, so they can neither be simulated nor stepped."
    ),
    # -- refused by the kernel's blacklist (kprobe_ref/kernel/blacklist.py) ---------------------
    "blacklisted:nokprobe": (
        "Inside a function marked NOKPROBE_SYMBOL (the table between __start_kprobe_blacklist "
        "and __stop_kprobe_blacklist): code the kprobe machinery itself runs."
    ),
    "blacklisted:kprobes-text": "Inside __kprobes_text (functions marked __kprobes).",
    "blacklisted:noinstr-text": (
        "Inside __noinstr_text (noinstr functions: entry code that runs before RCU and "
        "instrumentation are safe)."
    ),
    "blacklisted:entry-text": "Inside __entry_text (the low-level exception and syscall entry).",
    "blacklisted:irqentry-text": "Inside __irqentry_text (interrupt entry handlers).",
    "blacklisted:hyp-text": "Inside __hyp_text (arm64 KVM hypervisor code, run at EL2).",
    "blacklisted:hyp-idmap-text": (
        "Inside __hyp_idmap_text (arm64 KVM code run from the identity map at EL2)."
    ),
    "blacklisted:suffixed-symbol": (
        "In a compiler-made clone (foo.cold, foo.part.0, foo.isra.0) of a blacklisted "
        "function foo: Linux checks the base name."
    ),
    "blacklisted:init-text": (
        "In init text (_sinittext.._einittext), which a booted kernel has freed: not kernel "
        "text any more, so Linux refuses it."
    ),
    "blacklisted:jump-label": (
        "A jump-label (static key) site from __jump_table: the kernel rewrites this "
        "instruction between a NOP and a jump at run time."
    ),
    "blacklisted:static-call": (
        "A static-call site from .static_call_sites: the kernel rewrites this call's target "
        "at run time."
    ),
    "blacklisted:bug": (
        "A BUG() or WARN() trap listed in __bug_table: the trap handler finds its entry by "
        "this address, so a breakpoint there would hide it."
    ),
    "blacklisted:cfi-preamble": (
        "Inside a __cfi_ or __pfx_ symbol: the CFI type hash or the padding before a "
        "function, never executed as code."
    ),
}


def describe(code: str) -> str:
    """Return the meaning of a reason code."""
    return REASONS[code]
