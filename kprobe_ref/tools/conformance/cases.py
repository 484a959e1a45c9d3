"""Candidate instructions for every decode-table row, at the operand edge cases.

Fixed-width ISAs (aarch64, riscv64, loongarch64) are generated from the rows' own bit
patterns: fixed bits stay, each field letter is filled several ways.  For a simulated row
the candidates include the words whose effect, computed by the reference's own rule on a
fixed state, reaches furthest below and above the probe address (the minimum and maximum
branch offset, literal offset or PC-relative address): the fills tried for that are every
field at all zeros and all ones and every single field bit set or cleared alone, so the
extreme is found whatever order the encoding scatters the immediate's bits in.  Register
fields are filled distinct, all equal (source = destination), with the zero register, with
the stack pointer, and with the highest register number.  x86_64 rows are opcode maps, so
their candidates are built per row from the opcode and ModRM patterns of the table.

Every row also gets a user-mode candidate, and the classes no row lists (``plain``,
``rip_relative``) get a few representative instructions, loads and stores included.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from kprobe_ref.arch import Verdict
from kprobe_ref.tools.conformance.check import (
    Candidate,
    Checker,
    apply_rule,
    code_pages,
    draw_state,
)
from kprobe_ref.tools.conformance.layout import CODE

__all__ = ["candidates"]

REG_LETTERS: dict[str, str] = {"aarch64": "tnd", "riscv64": "dst", "loongarch64": "djk"}
"""Pattern letters that name registers."""
SP_NUMBER = {"aarch64": 31, "riscv64": 2, "loongarch64": 3}
"""The stack pointer's register number (aarch64: 31 is SP or XZR by instruction)."""


# ---------------------------------------------------------------------------------------
# Fixed-width ISAs: fills of a bit pattern


def _letters(bits: str) -> dict[str, list[int]]:
    """Bit positions (0 = least significant) of each field letter of a pattern."""
    out: dict[str, list[int]] = {}
    n = len(bits)
    for i, ch in enumerate(bits):
        if ch not in "01":
            out.setdefault(ch, []).append(n - 1 - i)
    return out


def _fill(bits: str, values: dict[str, int]) -> int:
    """The word with fixed bits from the pattern and each letter's bits from ``values``
    (a letter's bits are taken most significant first)."""
    mask_match = int("".join(b if b in "01" else "0" for b in bits), 2)
    w = mask_match
    for letter, positions in _letters(bits).items():
        v = values.get(letter, 0)
        for k, pos in enumerate(positions):
            if v >> (len(positions) - 1 - k) & 1:
                w |= 1 << pos
    return w


def _row_bits(row: Any) -> str:
    return str(getattr(row, "bits", None) or row.pattern.replace(" ", ""))


def _to_bytes(w: int, width: int) -> bytes:
    return w.to_bytes(width // 8, "little")


def _metric(checker: Checker, c: Candidate) -> tuple[int, ...] | None:
    """How far the rule sends the PC, a read and each written register from the probe
    address (signed), on one fixed state; ``None`` if not simulated."""
    d = checker.decode(c, c.raw)
    if d.verdict is not Verdict.SIMULATE or d.klass != c.row:
        return None
    post, rec = apply_rule(checker.arch, d, draw_state(checker.arch, c, 0),
                           code_pages(c, c.raw))
    pc = post.regs[checker.arch.regs_class.PC]
    reads = [a for a, _ in rec.reads[:1]]
    return tuple(_signed(v - c.addr) for v in (pc, *reads))


def _signed(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def _fixed_row(checker: Checker, row: Any, isa: str, rng: random.Random) -> Iterator[Candidate]:
    bits = _row_bits(row)
    width = len(bits)
    letters = _letters(bits)
    regs = [ch for ch in letters if ch in REG_LETTERS[isa] and len(letters[ch]) in (3, 5)]
    imms = [ch for ch in letters if ch not in regs]

    def cand(case: str, values: dict[str, int], user: bool = False) -> Candidate:
        w = _fill(bits, values)
        return Candidate(isa, row.klass, case, _to_bytes(w, width), CODE, user)

    base = {ch: rng.getrandbits(len(letters[ch])) for ch in letters}
    distinct = dict(base)
    for k, ch in enumerate(regs):
        distinct[ch] = (5 + 3 * k) % (1 << len(letters[ch]))
    yield cand("random", distinct)
    yield cand("random-user", distinct, user=True)
    for label, fill in (("fields-zero", 0), ("fields-ones", -1)):
        yield cand(label, {**distinct, **{ch: fill & ((1 << len(letters[ch])) - 1)
                                          for ch in imms}})
    for label, reg in (("regs-equal", 9), ("reg-zero", 0), ("reg-sp", SP_NUMBER[isa]),
                       ("reg-max", 31)):
        values = dict(distinct)
        for ch in regs:
            values[ch] = reg % (1 << len(letters[ch]))
        yield cand(label, values)
    yield from _extremes(checker, row, isa, bits, distinct, imms, letters)


def _extremes(checker: Checker, row: Any, isa: str, bits: str, base: dict[str, int],
              imms: list[str], letters: dict[str, list[int]]) -> Iterator[Candidate]:
    """The candidates whose rule result lies furthest below and above the probe."""
    if row.verdict is not Verdict.SIMULATE or not imms:
        return
    width = len(bits)
    fills: list[dict[str, int]] = []
    for ch in imms:
        n = len(letters[ch])
        full = (1 << n) - 1
        for v in (0, full, *(1 << k for k in range(n)), *(full ^ (1 << k) for k in range(n))):
            for other in (0, -1):
                fill = {**base, **{o: other & ((1 << len(letters[o])) - 1) for o in imms}}
                fill[ch] = v
                fills.append(fill)
    scored: list[tuple[tuple[int, ...], bytes]] = []
    for fill in fills:
        raw = _to_bytes(_fill(bits, fill), width)
        metric = _metric(checker, Candidate(isa, row.klass, "probe", raw))
        if metric is not None:
            scored.append((metric, raw))
    if not scored:
        return
    for k in range(len(scored[0][0])):
        lo = min(scored, key=lambda s: s[0][k] if len(s[0]) > k else 0)
        hi = max(scored, key=lambda s: s[0][k] if len(s[0]) > k else 0)
        yield Candidate(isa, row.klass, f"min-{'pc' if k == 0 else 'read'}", lo[1])
        yield Candidate(isa, row.klass, f"max-{'pc' if k == 0 else 'read'}", hi[1])


def _words(isa: str, rows: Any, checker: Checker) -> Iterator[Candidate]:
    rng = random.Random(f"conformance:{isa}")
    for row in rows:
        yield from _fixed_row(checker, row, isa, rng)


# ---------------------------------------------------------------------------------------
# Representative instructions of the classes no row lists

def _plain_aarch64() -> list[tuple[str, bytes]]:
    words = {
        "add-reg": 0x8B02_0020,  # add x0, x1, x2
        "add-alias": 0x8B00_0000,  # add x0, x0, x0
        "mov-from-sp": 0x9100_03E0,  # mov x0, sp
        "ldr-imm": 0xF940_0420,  # ldr x0, [x1, #8]
        "ldr-sp": 0xF940_07E1,  # ldr x1, [sp, #8]
        "str-pre-sp": 0xF81F_0FE3,  # str x3, [sp, #-16]!
        "ldp-post-sp": 0xA8C1_7BFD,  # ldp x29, x30, [sp], #16
        "ldrsw-imm": 0xB980_0441,  # ldrsw x1, [x2, #4]
        "csel": 0x9A82_1020,  # csel x0, x1, x2, ne
        "adds-flags": 0xAB02_0020,  # adds x0, x1, x2
    }
    return [(k, v.to_bytes(4, "little")) for k, v in words.items()]


def _plain_riscv64() -> list[tuple[str, bytes]]:
    items = {
        "addi": (0x0015_0513, 4),  # addi a0, a0, 1
        "add": (0x00B5_0533, 4),  # add a0, a0, a1
        "ld": (0x0085_B503, 4),  # ld a0, 8(a1)
        "sd-sp": (0x0011_3423, 4),  # sd ra, 8(sp)
        "lw-neg": (0xFFC5_A503, 4),  # lw a0, -4(a1)
        "lui": (0x1234_5537, 4),  # lui a0, 0x12345
        "c.mv": (0x852E, 2),  # c.mv a0, a1 (beside c.jr)
        "c.add": (0x952E, 2),  # c.add a0, a1 (beside c.jalr)
        "c.addi16sp": (0x7139, 2),  # addi sp, sp, -64
        "c.ldsp": (0x6522, 2),  # ld a0, 8(sp)
    }
    return [(k, w.to_bytes(n, "little")) for k, (w, n) in items.items()]


def _plain_loongarch64() -> list[tuple[str, bytes]]:
    from kprobe_ref.arch.loongarch64 import encoding as la

    return [
        ("add.d", la.encode_3r(0x21, 4, 5, 6)),
        ("add.d-alias", la.encode_3r(0x21, 4, 4, 4)),
        ("addi.d-sp", la.encode_2ri12(0xB, 3, 3, -16)),
        ("ld.d", la.encode_2ri12(0xA3, 4, 5, 8)),
        ("ld.d-neg", la.encode_2ri12(0xA3, 4, 5, -2048)),
        ("st.d-sp", la.encode_2ri12(0xA7, 1, 3, 8)),
        ("ld.w-max", la.encode_2ri12(0xA2, 4, 5, 2047)),
    ]


_PLAIN: dict[str, Callable[[], list[tuple[str, bytes]]]] = {
    "aarch64": _plain_aarch64,
    "riscv64": _plain_riscv64,
    "loongarch64": _plain_loongarch64,
}


_UNDECODABLE = {
    "aarch64": (0x9C00_0000 | 0x1F).to_bytes(4, "little"),  # LDR (literal, SIMD&FP) opc 11
    "riscv64": bytes.fromhex("ffffffff"),  # a length encoding beyond 32 bits
    "loongarch64": bytes.fromhex("ffffffff"),
}
"""Bytes each ISA's decoder cannot decode."""


def _sequences(isa: str) -> Iterator[Candidate]:
    """A probe right after a load-exclusive of the same function."""
    if isa == "aarch64":
        ldxr, nop = 0xC85F_7C20, 0xD503_201F  # ldxr x0, [x1]; nop
        ctx, raw = ldxr.to_bytes(4, "little"), nop.to_bytes(4, "little")
    elif isa == "riscv64":
        ctx, raw = (0x1005_B52F).to_bytes(4, "little"), (0x0015_0513).to_bytes(4, "little")
    elif isa == "loongarch64":
        from kprobe_ref.arch.loongarch64 import encoding as la

        ctx, raw = la.encode_ll_sc("ll.d", 4, 5), la.encode_3r(0x21, 6, 6, 6)
    else:
        return
    yield Candidate(isa, "(inside exclusive sequence)", "after-load-exclusive", raw, CODE + 4,
                    context=ctx, reason="inside-exclusive-sequence")


# ---------------------------------------------------------------------------------------
# x86_64


def _le(v: int, n: int) -> bytes:
    return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")


_X86_REL8 = {"jmp_rel8": b"\xeb", "loop": b"\xe2", "loope": b"\xe1", "loopne": b"\xe0",
             "jrcxz": b"\xe3"}
_X86_REL32 = {"jmp_rel32": b"\xe9", "call_rel32": b"\xe8"}
_X86_REJECT = {
    "int3": "cc", "int_n": "cd03", "into": "ce", "int1": "f1", "ud0": "0fff00",
    "ud1": "0fb900", "ud2": "0f0b", "iret": "48cf", "syscall": "0f05", "sysret": "0f07",
    "sysenter": "0f34", "sysexit": "0f35", "rsm": "0faa", "retf": "cb", "retf_imm": "ca0800",
    "call_far": "9a000000000000", "jmp_far": "ea000000000000", "call_far_ind": "ff18",
    "jmp_far_ind": "ff28", "mov_ss": "8ed0", "pop_ss": "17", "hlt": "f4", "xabort": "c6f801",
    "xbegin": "c7f800000000", "xend": "0f01d5", "undecodable": "0f04",
    "vmx": "0f01c1", "svm": "0f01d9", "fred_return": "f30f01ca",
    "unclassified_flow": "0f0b",
    "operand-size-branch": "66eb00", "address-size-branch": "67e200",
    "segment-relative-target": "64ff20",
}
_X86_PLAIN = {
    "add": "4801d8", "add-alias": "4801c0", "mov-load": "488b4708", "mov-store-sp": "48890424",
    "push": "53", "pop": "5b", "lea-sib": "488d44cb10", "xchg": "4887d8", "cmp": "4839d8",
    "movzx-byte": "480fb606", "cmov": "480f44c3", "setcc": "0f94c0", "pushfq": "9c",
    "neg": "48f7d8", "shl-cl": "48d3e0",
}
_X86_RIP = {"mov-load": "488b05", "mov-store": "488905", "lea": "488d05", "push-mem": "ff35",
            "cmp-imm8": "48833d", "mov-imm32": "c705"}
"""RIP-relative forms: prefix and opcode up to the ModRM byte; a disp32 follows (and an
immediate for the last two)."""
_X86_RIP_IMM = {"cmp-imm8": b"\x7f", "mov-imm32": b"\x78\x56\x34\x12"}


def _x86() -> Iterator[Candidate]:
    isa = "x86_64"

    def c(row: str, case: str, raw: bytes, **kw: Any) -> Candidate:
        return Candidate(isa, row, case, raw, **kw)

    for cc in range(16):
        for disp in (-128, 127):
            yield c("jcc_rel8", f"cc{cc:x}-disp{disp}", bytes([0x70 | cc]) + _le(disp, 1))
        for disp in (-(1 << 31), (1 << 31) - 1):
            yield c("jcc_rel32", f"cc{cc:x}-disp{disp:#x}", bytes([0x0F, 0x80 | cc]) + _le(disp, 4))
    yield c("jcc_rel8", "disp0", b"\x74\x00")
    yield c("jcc_rel8", "user", b"\x75\x10", user=True)
    for row, op in _X86_REL8.items():
        for disp in (-128, 0, 127):
            for rcx in (0, 1, 2):
                if row == "jmp_rel8" and rcx:
                    continue
                yield c(row, f"disp{disp}-rcx{rcx}", op + _le(disp, 1), regs={"rcx": rcx})
        yield c(row, "user", op + b"\x08", user=True, regs={"rcx": 5})
    for row, op in _X86_REL32.items():
        for disp in (-(1 << 31), 0, (1 << 31) - 1):
            yield c(row, f"disp{disp:#x}", op + _le(disp, 4))
        yield c(row, "user", op + _le(0x100, 4), user=True)
    yield c("ret", "plain", b"\xc3")
    yield c("ret", "user", b"\xc3", user=True)
    for imm in (0, 8, 0xFFFF):
        yield c("ret_imm16", f"imm{imm:#x}", b"\xc2" + _le(imm, 2))
    yield from _x86_indirect()
    for row, hexs in _X86_REJECT.items():
        yield c(row, "reject", bytes.fromhex(hexs))
    for case, hexs in _X86_PLAIN.items():
        yield c("plain", case, bytes.fromhex(hexs))
    yield c("plain", "user", bytes.fromhex("4801d8"), user=True)
    yield from _x86_rip()


def _x86_indirect() -> Iterator[Candidate]:
    isa = "x86_64"
    for row, reg in (("call_ind_reg", 2), ("jmp_ind_reg", 4)):
        for rm in range(16):
            rex = b"\x41" if rm >= 8 else b""
            yield Candidate(isa, row, f"r{rm}", rex + bytes([0xFF, 0xC0 | reg << 3 | rm & 7]))
        yield Candidate(isa, row, "user", bytes([0xFF, 0xC0 | reg << 3]), user=True)
    for row, reg in (("call_ind_mem", 2), ("jmp_ind_mem", 4)):
        forms = {
            "base-rax": bytes([0x00 | reg << 3]),
            "base-rsp-sib": bytes([0x04 | reg << 3, 0x24]),
            "sib-scale8-disp8-min": bytes([0x44 | reg << 3, 0xCB, 0x80]),
            "sib-scale8-disp8-max": bytes([0x44 | reg << 3, 0xCB, 0x7F]),
            "disp32-max": bytes([0x80 | reg << 3 | 3]) + _le((1 << 31) - 1, 4),
            "disp32-min": bytes([0x80 | reg << 3 | 3]) + _le(-(1 << 31), 4),
            "rip": bytes([0x05 | reg << 3]) + _le(0x100, 4),
            "rip-min": bytes([0x05 | reg << 3]) + _le(-(1 << 31), 4),
            "r13-index-r12": b"\x43" + bytes([0x44 | reg << 3, 0x25, 0x08]),
        }
        for case, tail in forms.items():
            yield Candidate(isa, row, case, b"\xff" + tail,
                            regs={"rbx": 0x30_0000_0100, "rcx": 2, "r12": 1})
        yield Candidate(isa, row, "user", b"\xff" + forms["base-rax"], user=True)


def _x86_rip() -> Iterator[Candidate]:
    isa = "x86_64"
    for case, head in _X86_RIP.items():
        op = bytes.fromhex(head)
        imm = _X86_RIP_IMM.get(case, b"")
        for disp in (0, 0x1000, -0x1000, -(1 << 31)):
            yield Candidate(isa, "rip_relative", f"{case}-disp{disp:#x}", op + _le(disp, 4) + imm)
        yield Candidate(isa, "rip_relative", f"{case}-reach-max", op + bytes(4) + imm,
                        disp_at_slot=(1 << 31) - 1)
        yield Candidate(isa, "rip_relative", f"{case}-user-scratch", op + _le(0x1000, 4) + imm,
                        user=True)
    op = bytes.fromhex(_X86_RIP["mov-load"])
    for disp in ((1 << 31) - 1, -(1 << 31)):  # the slot goes where the target is in reach
        yield Candidate(isa, "rip_relative", f"disp-extreme{disp:#x}", op + _le(disp, 4))


# ---------------------------------------------------------------------------------------


def candidates(isa: str) -> Iterator[Candidate]:
    """Every candidate of ``isa``, in a fixed order."""
    if isa == "x86_64":
        yield from _x86()
        return
    checker = Checker(isa)
    module = __import__(f"kprobe_ref.arch.{isa}.decode", fromlist=["ROWS"])
    yield from _words(isa, module.ROWS, checker)
    for case, raw in _PLAIN[isa]():
        yield Candidate(isa, "plain", case, raw)
    yield Candidate(isa, "plain", "user", _PLAIN[isa]()[0][1], user=True)
    yield from _sequences(isa)
    yield Candidate(isa, "undecodable", "reserved", _UNDECODABLE[isa])
