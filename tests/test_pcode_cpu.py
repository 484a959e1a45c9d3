"""PcodeCpu: differential tests against unicorn, traps, faults, stop_at and max_steps.

The instruction encodings below were assembled with ziglang 0.17.1
(``python -m ziglang cc -target <isa>-freestanding-none -c x.S``, Intel syntax for x86_64,
``.option rvc`` for riscv64); ``test_encodings_match_ziglang`` re-assembles them when ziglang
is installed.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import unicorn
from elftools.elf import elffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode import PcodeCpu
from kprobe_ref.sim.undefined import undefined_mask

CODE = 0x10000
DATA = 0x40000
BASE = DATA + 0x100
STACK = DATA + 0x800
DIFF = settings(max_examples=int(os.environ.get("PCODE_EXAMPLES", "6")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
"""Six random states per instruction keep the file near 25 s; PCODE_EXAMPLES=60 digs."""

ENCODINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "x86_64": (
        ("add rax, rcx", "4801c8"),
        ("add eax, ecx", "01c8"),
        ("add ax, cx", "6601c8"),
        ("add al, cl", "00c8"),
        ("add rdx, 0x7f", "4883c27f"),
        ("sub rax, rcx", "4829c8"),
        ("sub esi, edi", "29fe"),
        ("adc rax, rcx", "4811c8"),
        ("sbb rdx, rsi", "4819f2"),
        ("and rax, rcx", "4821c8"),
        ("or r8, r9", "4d09c8"),
        ("xor r10d, r11d", "4531da"),
        ("cmp rax, rcx", "4839c8"),
        ("cmp al, 0x80", "3c80"),
        ("test rcx, rdx", "4885d1"),
        ("inc r12", "49ffc4"),
        ("dec r13d", "41ffcd"),
        ("neg r14", "49f7de"),
        ("not r15", "49f7d7"),
        ("imul rax, rcx", "480fafc1"),
        ("imul edx, esi, 0x1234", "69d634120000"),
        ("mul rcx", "48f7e1"),
        ("shl rax, cl", "48d3e0"),
        ("shr rdx, cl", "48d3ea"),
        ("sar rsi, cl", "48d3fe"),
        ("shl rax, 1", "48d1e0"),
        ("shr rdi, 7", "48c1ef07"),
        ("sar r8d, 31", "41c1f81f"),
        ("rol rax, cl", "48d3c0"),
        ("ror r9, 13", "49c1c90d"),
        ("shld rax, rdx, 9", "480fa4d009"),
        ("lea rax, [rcx + rdx*4 + 0x10]", "488d449110"),
        ("lea eax, [rcx + rdx - 1]", "8d4411ff"),
        ("mov rax, qword ptr [rbx + 0x18]", "488b4318"),
        ("mov ecx, dword ptr [rbx + 0x20]", "8b4b20"),
        ("mov qword ptr [rbx + 0x28], rdx", "48895328"),
        ("mov byte ptr [rbx + 1], al", "884301"),
        ("movzx eax, byte ptr [rbx + 3]", "0fb64303"),
        ("movsx rax, word ptr [rbx + 6]", "480fbf4306"),
        ("movsxd rax, ecx", "4863c1"),
        ("push rax", "50"),
        ("pop rcx", "59"),
        ("cmovz rax, rcx", "480f44c1"),
        ("cmovl rdx, rsi", "480f4cd6"),
        ("setb al", "0f92c0"),
        ("setg cl", "0f9fc1"),
        ("xchg rax, rdx", "4892"),
        ("bswap rax", "480fc8"),
        ("cqo", "4899"),
        ("cdqe", "4898"),
        ("bt rax, rcx", "480fa3c8"),
        ("popcnt rax, rcx", "f3480fb8c1"),
        ("jz 1b+0x20", "741e"),
        ("jnz 1b+0x20", "751e"),
        ("jb 1b+0x20", "721e"),
        ("jle 1b+0x20", "7e1e"),
        ("jmp 1b+0x40", "eb3e"),
        ("call 1b+0x40", "e83b000000"),
        ("ret", "c3"),
        ("jmp rax", "ffe0"),
        ("xadd qword ptr [rbx + 0x30], rcx", "480fc14b30"),
        ("lock add qword ptr [rbx + 0x38], rax", "f048014338"),
    ),
    "aarch64": (
        ("add x0, x1, x2", "2000028b"),
        ("add w0, w1, w2", "2000020b"),
        ("adds x0, x1, x2", "200002ab"),
        ("adds w3, w4, w5", "8300052b"),
        ("subs x0, x1, x2", "200002eb"),
        ("subs w0, w1, #0x10", "20400071"),
        ("sub x3, x4, x5, lsl #7", "831c05cb"),
        ("adc x0, x1, x2", "2000029a"),
        ("sbcs x0, x1, x2", "200002fa"),
        ("and x0, x1, x2", "2000028a"),
        ("ands x0, x1, #0xff00", "201c78f2"),
        ("orr x0, x1, x2, ror #3", "200cc2aa"),
        ("eor w0, w1, w2", "2000024a"),
        ("bic x0, x1, x2", "2000228a"),
        ("cmp x1, x2", "3f0002eb"),
        ("cmn w1, w2", "3f00022b"),
        ("tst x1, #1", "3f0040f2"),
        ("lsl x0, x1, x2", "2020c29a"),
        ("lsr x0, x1, x2", "2024c29a"),
        ("asr w0, w1, w2", "2028c21a"),
        ("ror x0, x1, x2", "202cc29a"),
        ("lsl x0, x1, #13", "20c873d3"),
        ("ubfx x0, x1, #5, #12", "204045d3"),
        ("sbfx x0, x1, #60, #4", "20fc7c93"),
        ("bfi x0, x1, #8, #16", "203c78b3"),
        ("extr x0, x1, x2, #17", "2044c293"),
        ("mul x0, x1, x2", "207c029b"),
        ("madd x0, x1, x2, x3", "200c029b"),
        ("smulh x0, x1, x2", "207c429b"),
        ("umulh x0, x1, x2", "207cc29b"),
        ("udiv x0, x1, x2", "2008c29a"),
        ("sdiv w0, w1, w2", "200cc21a"),
        ("clz x0, x1", "2010c0da"),
        ("rbit x0, x1", "2000c0da"),
        ("rev x0, x1", "200cc0da"),
        ("rev16 w0, w1", "2004c05a"),
        ("csel x0, x1, x2, eq", "2000829a"),
        ("csinc x0, x1, x2, lt", "20b4829a"),
        ("csneg x0, x1, x2, hi", "208482da"),
        ("ccmp x1, x2, #4, ne", "241042fa"),
        ("cset x0, ge", "e0b79f9a"),
        ("movz x0, #0x1234, lsl #16", "8046a2d2"),
        ("movk x0, #0xbeef, lsl #32", "e0ddd7f2"),
        ("movn w0, #5", "a0008012"),
        ("adr x0, .+0x100", "00080010"),
        ("adrp x0, .", "00000090"),
        ("ldr x0, [x3, #8]", "600440f9"),
        ("ldr w0, [x3, #4]!", "604c40b8"),
        ("ldrb w0, [x3, #1]", "60044039"),
        ("ldrsh x0, [x3, #6]", "600c8079"),
        ("ldp x0, x2, [x3, #16]", "600841a9"),
        ("str x0, [x3, #24]", "600c00f9"),
        ("stp x0, x2, [x3, #-16]!", "6008bfa9"),
        ("strb w0, [x3], #1", "60140038"),
        ("ldr x0, [x3, x2, lsl #3]", "607862f8"),
        ("b.eq .+0x20", "00010054"),
        ("b.ne .+0x20", "01010054"),
        ("b.lt .+0x20", "0b010054"),
        ("b.hi .+0x20", "08010054"),
        ("cbz x0, .+0x20", "000100b4"),
        ("cbnz w0, .+0x20", "00010035"),
        ("tbz x0, #5, .+0x20", "00012836"),
        ("tbnz x0, #63, .+0x20", "0001f8b7"),
        ("b .+0x40", "10000014"),
        ("bl .+0x40", "10000094"),
        ("br x0", "00001fd6"),
        ("blr x0", "00003fd6"),
        ("ret", "c0035fd6"),
    ),
    "riscv64": (
        ("add a0, a1, a2", "3385c500"),
        ("addw a0, a1, a2", "3b85c500"),
        ("addi a0, a1, -5", "1385b5ff"),
        ("addiw a0, a1, 2047", "1b85f57f"),
        ("sub a0, a1, a2", "3385c540"),
        ("subw a0, a1, a2", "3b85c540"),
        ("and a0, a1, a2", "33f5c500"),
        ("or a0, a1, a2", "33e5c500"),
        ("xor a0, a1, a2", "33c5c500"),
        ("andi a0, a1, 0x7f", "13f5f507"),
        ("slt a0, a1, a2", "33a5c500"),
        ("sltu a0, a1, a2", "33b5c500"),
        ("slti a0, a1, -1", "13a5f5ff"),
        ("sltiu a0, a1, 1", "13b51500"),
        ("sll a0, a1, a2", "3395c500"),
        ("srl a0, a1, a2", "33d5c500"),
        ("sra a0, a1, a2", "33d5c540"),
        ("sllw a0, a1, a2", "3b95c500"),
        ("srlw a0, a1, a2", "3bd5c500"),
        ("sraw a0, a1, a2", "3bd5c540"),
        ("slli a0, a1, 40", "13958502"),
        ("srli a0, a1, 33", "13d51502"),
        ("srai a0, a1, 63", "13d5f543"),
        ("slliw a0, a1, 31", "1b95f501"),
        ("sraiw a0, a1, 7", "1bd57540"),
        ("lui a0, 0x80000", "37050080"),
        ("auipc a0, 0x12345", "17553412"),
        ("mul a0, a1, a2", "3385c502"),
        ("mulh a0, a1, a2", "3395c502"),
        ("mulhu a0, a1, a2", "33b5c502"),
        ("mulhsu a0, a1, a2", "33a5c502"),
        ("mulw a0, a1, a2", "3b85c502"),
        ("div a0, a1, a2", "33c5c502"),
        ("divu a0, a1, a2", "33d5c502"),
        ("rem a0, a1, a2", "33e5c502"),
        ("remu a0, a1, a2", "33f5c502"),
        ("divw a0, a1, a2", "3bc5c502"),
        ("remuw a0, a1, a2", "3bf5c502"),
        ("ld a0, 8(s1)", "8864"),
        ("lw a0, 4(s1)", "c840"),
        ("lwu a0, 4(s1)", "03e54400"),
        ("lb a0, 3(s1)", "03853400"),
        ("lhu a0, 6(s1)", "03d56400"),
        ("sd a0, 16(s1)", "88e8"),
        ("sw a0, 20(s1)", "c8c8"),
        ("sb a0, 1(s1)", "a380a400"),
        ("beq a1, a2, .+0x20", "6380c502"),
        ("bne a1, a2, .+0x20", "6390c502"),
        ("blt a1, a2, .+0x20", "63c0c502"),
        ("bgeu a1, a2, .+0x20", "63f0c502"),
        ("jal ra, .+0x40", "ef000004"),
        ("jalr ra, 8(a1)", "e7808500"),
        ("c.add a0, a1", "2e95"),
        ("c.addi a0, -3", "7515"),
        ("c.li a0, 17", "4545"),
        ("c.mv a0, a1", "2e85"),
        ("c.slli a0, 12", "3205"),
        ("c.srai a0, 3", "0d85"),
        ("c.andi a0, 5", "1589"),
        ("c.sub a0, a1", "0d8d"),
        ("c.ld a0, 8(s1)", "8864"),
        ("c.sd a0, 16(s1)", "88e8"),
        ("c.beqz a0, .+0x20", "05c1"),
        ("c.bnez a0, .+0x20", "05e1"),
        ("c.j .+0x40", "81a0"),
        ("c.jr a1", "8285"),
        ("c.jalr a1", "8295"),
        ("amoadd.d a0, a2, (s1)", "2fb5c400"),
        ("amoswap.w a0, a2, (s1)", "2fa5c408"),
    ),
}

POINTERS: dict[str, dict[str, int]] = {
    "x86_64": {"rbx": BASE, "rsp": STACK},
    "aarch64": {"x3": BASE, "sp": STACK},
    "riscv64": {"x9": BASE, "x2": STACK},
}
"""Registers that hold the base addresses of memory operands (pinned into the data page)."""

PINNED: dict[str, dict[str, int]] = {"ldr x0, [x3, x2, lsl #3]": {"x2": 5}}

GPRS: dict[str, list[str]] = {
    "x86_64": ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"]
    + [f"r{i}" for i in range(8, 16)],
    "aarch64": [f"x{i}" for i in range(31)] + ["sp"],
    "riscv64": [f"x{i}" for i in range(1, 32)],
}
PC = {"x86_64": "rip", "aarch64": "pc", "riscv64": "pc"}
FLAGS: dict[str, tuple[str, int]] = {"x86_64": ("rflags", 0x8D5), "aarch64": ("nzcv", 0xF << 28)}

_UC: dict[str, tuple[int, int, Any]] = {
    "x86_64": (unicorn.UC_ARCH_X86, unicorn.UC_MODE_64, unicorn.x86_const),
    "aarch64": (unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM, unicorn.arm64_const),
    "riscv64": (unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64, unicorn.riscv_const),
}


def _uc_reg(isa: str, name: str) -> int:
    consts = _UC[isa][2]
    prefix = {"x86_64": "UC_X86_REG_", "aarch64": "UC_ARM64_REG_", "riscv64": "UC_RISCV_REG_"}
    return int(getattr(consts, prefix[isa] + name.upper()))


class _Unicorn:
    """The reference CPU: unicorn with the same two mappings."""

    def __init__(self, isa: str) -> None:
        arch, mode, _ = _UC[isa]
        self.isa = isa
        self.uc = unicorn.Uc(arch, mode)
        self.uc.mem_map(CODE, 0x1000, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
        self.uc.mem_map(DATA, 0x1000, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)

    def mem_write(self, addr: int, data: bytes) -> None:
        self.uc.mem_write(addr, data)

    def mem_read(self, addr: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(addr, n))

    def reg_write(self, name: str, value: int) -> None:
        self.uc.reg_write(_uc_reg(self.isa, name), value)

    def reg_read(self, name: str) -> int:
        return int(self.uc.reg_read(_uc_reg(self.isa, name)))

    def step(self, length: int) -> None:
        """Execute one instruction; a branch to unmapped code completes (the PC is the
        target) and faults only when unicorn fetches there."""
        try:
            self.uc.emu_start(CODE, CODE + length, count=1)
        except unicorn.UcError as e:
            if e.errno != unicorn.UC_ERR_FETCH_UNMAPPED:
                raise


def _pcode(isa: str) -> PcodeCpu:
    cpu = PcodeCpu(isa)
    cpu.map(CODE, 0x1000, "rx")
    cpu.map(DATA, 0x1000, "rw")
    return cpu


def _load_state(cpu: Any, isa: str, asm: str, code: bytes, regs: dict[str, int],
                flags: int, data: bytes) -> None:
    cpu.mem_write(CODE, code)
    cpu.mem_write(DATA, data)
    for name, value in (regs | POINTERS[isa] | PINNED.get(asm, {})).items():
        cpu.reg_write(name, value)
    if isa in FLAGS:
        name, mask = FLAGS[isa]
        cpu.reg_write(name, (flags & mask) | (0x2 if isa == "x86_64" else 0))


def _observe(cpu: Any, isa: str, asm: str) -> dict[str, int | bytes]:
    out: dict[str, int | bytes] = {}
    for name in GPRS[isa] + [PC[isa]]:
        out[name] = cpu.reg_read(name) & ~undefined_mask(isa, asm, name) & (2**64 - 1)
    if isa in FLAGS:
        name, mask = FLAGS[isa]
        out[name] = cpu.reg_read(name) & mask & ~undefined_mask(isa, asm, name)
    out["data"] = cpu.mem_read(DATA, 0x1000)
    return out


_CASES = [pytest.param(isa, asm, hx, id=f"{isa}:{asm}")
          for isa, rows in ENCODINGS.items() for asm, hx in rows]


@pytest.mark.parametrize(("isa", "asm", "hexcode"), _CASES)
@DIFF
@given(regs=st.lists(st.sampled_from([0, 1, 2**63, 2**64 - 1, 0x7FFF_FFFF, 0x8000_0000])
                     | st.integers(0, 2**64 - 1), min_size=32, max_size=32),
       flags=st.integers(0, 2**32 - 1), seed=st.integers(0, 2**32 - 1))
def test_one_instruction_matches_unicorn(isa: str, asm: str, hexcode: str, regs: list[int],
                                         flags: int, seed: int) -> None:
    code = bytes.fromhex(hexcode)
    data = random.Random(seed).randbytes(0x1000)
    values = dict(zip(GPRS[isa], regs, strict=False))
    ref, cpu = _Unicorn(isa), _pcode(isa)
    for backend in (ref, cpu):
        _load_state(backend, isa, asm, code, values, flags, data)
    ref.step(len(code))
    stop = cpu.run(CODE, frozenset(), 1)
    assert stop.kind is StopKind.STEP_LIMIT, stop
    assert _observe(cpu, isa, asm) == _observe(ref, isa, asm)


# ---------------------------------------------------------------------------------------
# Encodings


_PRELUDE = {"x86_64": ".intel_syntax noprefix\n", "aarch64": "", "riscv64": ".option rvc\n"}


@pytest.mark.parametrize("isa", sorted(ENCODINGS))
def test_encodings_match_ziglang(isa: str, tmp_path: Path) -> None:
    src = _PRELUDE[isa] + "".join(f"1:\n{asm}\n" for asm, _ in ENCODINGS[isa])
    (tmp_path / "x.S").write_text(src)
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", f"{isa}-freestanding-none",
                    "-c", str(tmp_path / "x.S"), "-o", str(tmp_path / "x.o")], check=True)
    with open(tmp_path / "x.o", "rb") as f:
        text = elffile.ELFFile(f).get_section_by_name(".text").data()
    assert text.hex() == "".join(hx for _, hx in ENCODINGS[isa])


# ---------------------------------------------------------------------------------------
# Traps


def _run_words(isa: str, code: bytes, regs: dict[str, int] | None = None,
               steps: int = 1) -> tuple[PcodeCpu, Any]:
    cpu = PcodeCpu(isa)
    cpu.map(CODE, 0x1000, "rx")
    cpu.map(DATA, 0x1000, "rw")
    cpu.mem_write(CODE, code)
    for name, value in (regs or {}).items():
        cpu.reg_write(name, value)
    return cpu, cpu.run(CODE, frozenset(), steps)


def _le32(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


BREAKS = [
    ("x86_64", bytes.fromhex("90cc"), 1, 0),                  # nop; int3
    ("aarch64", _le32(0xD503201F, 0xD4224680), 4, 0x1234),    # nop; brk #0x1234
    ("riscv64", _le32(0x00000013, 0x00100073), 4, 0),         # nop; ebreak
    ("riscv64", _le32(0x00000013) + bytes.fromhex("0290"), 4, 0),  # nop; c.ebreak
    ("loongarch64", _le32(0x03400000, 0x002A0005), 4, 5),     # nop; break 5
]


@pytest.mark.parametrize(("isa", "code", "offset", "imm"), BREAKS)
def test_breakpoint_stops_at_its_own_address_with_its_code(isa: str, code: bytes, offset: int,
                                                           imm: int) -> None:
    _, stop = _run_words(isa, code, steps=10)
    assert (stop.kind, stop.pc, stop.code, stop.steps) == (StopKind.BREAK, CODE + offset, imm, 2)


SYSCALLS = [
    ("x86_64", bytes.fromhex("0f05")),
    ("aarch64", _le32(0xD4000001)),
    ("riscv64", _le32(0x00000073)),
    ("loongarch64", _le32(0x002B0000)),
]


@pytest.mark.parametrize(("isa", "code"), SYSCALLS)
def test_syscall_instruction_stops_with_syscall(isa: str, code: bytes) -> None:
    _, stop = _run_words(isa, code)
    assert (stop.kind, stop.pc, stop.steps) == (StopKind.SYSCALL, CODE, 1)


UNMAPPED_LOADS = [
    ("x86_64", bytes.fromhex("90488b4310"), 1, {"rbx": 0x900000}),     # nop; mov rax,[rbx+16]
    ("aarch64", _le32(0xD503201F, 0xF9400860), 4, {"x3": 0x900000}),   # nop; ldr x0,[x3,#16]
    ("riscv64", _le32(0x00000013, 0x0104B503), 4, {"x9": 0x900000}),   # nop; ld a0,16(s1)
    ("loongarch64", _le32(0x03400000, 0x28C040A4), 4, {"r5": 0x900000}),  # nop; ld.d a0,a1,16
]


@pytest.mark.parametrize(("isa", "code", "offset", "regs"), UNMAPPED_LOADS)
def test_unmapped_load_faults_at_the_loading_instruction(isa: str, code: bytes, offset: int,
                                                         regs: dict[str, int]) -> None:
    _, stop = _run_words(isa, code, regs, steps=10)
    assert (stop.kind, stop.pc, stop.fault_addr) == (StopKind.FAULT, CODE + offset, 0x900010)


def test_store_to_read_only_page_faults() -> None:
    cpu, stop = _run_words("riscv64", _le32(0x00A4B823), {"x9": CODE})  # sd a0,16(s1)
    assert (stop.kind, stop.fault_addr) == (StopKind.FAULT, CODE + 16)
    assert cpu.mem_read(CODE + 16, 8) == bytes(8)


def test_fetch_from_non_executable_page_faults() -> None:
    cpu = PcodeCpu("aarch64")
    cpu.map(DATA, 0x1000, "rw")
    stop = cpu.run(DATA, frozenset(), 1)
    assert (stop.kind, stop.pc, stop.fault_addr) == (StopKind.FAULT, DATA, DATA)


def test_unimplemented_callother_faults_naming_it() -> None:
    _, stop = _run_words("x86_64", bytes.fromhex("0f31"))  # rdtsc
    assert stop.kind is StopKind.FAULT
    assert "unimplemented CALLOTHER rdtsc" in stop.detail and "0x10000" in stop.detail


def test_undecodable_bytes_fault() -> None:
    _, stop = _run_words("aarch64", _le32(0x00000000))  # udf #0 has no P-code decoding
    assert stop.kind is StopKind.FAULT and stop.pc == CODE
    assert stop.detail


def test_x86_division_by_zero_faults() -> None:
    _, stop = _run_words("x86_64", bytes.fromhex("48f7f1"), {"rcx": 0})  # div rcx
    assert stop.kind is StopKind.FAULT and "#DE" in stop.detail


def test_x86_quotient_overflow_faults() -> None:
    _, stop = _run_words("x86_64", bytes.fromhex("48f7f1"), {"rcx": 1, "rdx": 1})
    assert stop.kind is StopKind.FAULT and "#DE" in stop.detail


@pytest.mark.parametrize(("word", "expected"), [
    (0x02C5C533, 2**64 - 1),  # div a0, a1, a2 (signed): all ones
    (0x02C5D533, 2**64 - 1),  # divu: all ones
    (0x02C5E533, 77),         # rem: the dividend
    (0x02C5F533, 77),         # remu: the dividend
])
def test_riscv_division_by_zero_gives_the_isa_result(word: int, expected: int) -> None:
    cpu, stop = _run_words("riscv64", _le32(word), {"x11": 77, "x12": 0})
    assert stop.kind is StopKind.STEP_LIMIT
    assert cpu.reg_read("x10") == expected


# ---------------------------------------------------------------------------------------
# Running


NOPS = {"riscv64": _le32(0x00000013) * 8}


def test_stop_at_entry_stops_before_any_instruction() -> None:
    _, stop = _run_words("riscv64", NOPS["riscv64"], steps=0)
    cpu = PcodeCpu("riscv64")
    cpu.map(CODE, 0x1000, "rx")
    stop = cpu.run(CODE, frozenset({CODE}), 100)
    assert (stop.kind, stop.pc, stop.steps) == (StopKind.STOP_AT, CODE, 0)


def test_stop_at_stops_before_the_listed_address() -> None:
    cpu, _ = _run_words("riscv64", NOPS["riscv64"], steps=0)
    stop = cpu.run(CODE, frozenset({CODE + 12}), 100)
    assert (stop.kind, stop.pc, stop.steps) == (StopKind.STOP_AT, CODE + 12, 3)
    assert cpu.reg_read("pc") == CODE + 12


def test_max_steps_limits_the_run() -> None:
    _, stop = _run_words("riscv64", NOPS["riscv64"], steps=5)
    assert (stop.kind, stop.pc, stop.steps) == (StopKind.STEP_LIMIT, CODE + 20, 5)


def test_host_write_replaces_cached_code() -> None:
    cpu, _ = _run_words("riscv64", _le32(0x00150513), {"x10": 1})  # addi a0, a0, 1
    cpu.mem_write(CODE, _le32(0x00250513))                            # addi a0, a0, 2
    cpu.run(CODE, frozenset(), 1)
    assert cpu.reg_read("x10") == 4


def test_branch_inside_instruction_pcode_works() -> None:
    # aarch64 udiv x0, x1, x2 with x2 == 0 takes P-code's internal branch: result 0
    cpu, stop = _run_words("aarch64", _le32(0x9AC20820), {"x0": 9, "x1": 5, "x2": 0})
    assert stop.kind is StopKind.STEP_LIMIT and cpu.reg_read("x0") == 0


def test_flag_registers_round_trip() -> None:
    x86, arm = PcodeCpu("x86_64"), PcodeCpu("aarch64")
    x86.reg_write("rflags", 0x8D5 | 0x400)
    arm.reg_write("nzcv", 0xA000_0000)
    assert x86.reg_read("rflags") == 0x8D7 | 0x400
    assert arm.reg_read("nzcv") == 0xA000_0000
    assert x86.reg_read("ZF") == 1 and arm.reg_read("NG") == 1


def test_sleigh_register_names_are_readable() -> None:
    cpu = PcodeCpu("loongarch64")
    cpu.reg_write("r4", 0x1234)
    assert cpu.reg_read("a0") == 0x1234 and cpu.reg_read("fcc3") == 0


def test_watched_addresses_are_counted_and_context_restores() -> None:
    cpu, _ = _run_words("riscv64", NOPS["riscv64"], {"x5": 7}, steps=0)
    cpu.watch.add(CODE + 4)
    saved = cpu.save_context()
    cpu.run(CODE, frozenset(), 3)
    cpu.run(CODE, frozenset(), 3)
    cpu.reg_write("x5", 9)
    cpu.restore_context(saved)
    assert cpu.exec_counts[CODE + 4] == 2 and cpu.reg_read("x5") == 7


def test_zero_register_stays_zero() -> None:
    cpu, _ = _run_words("riscv64", _le32(0x00500013))  # addi x0, x0, 5
    assert cpu.reg_read("zero") == 0


def test_undefined_table_matches_by_mnemonic() -> None:
    assert undefined_mask("x86_64", "imul rax, rcx", "rflags") & 0x40
    assert undefined_mask("x86_64", "mov rax, rcx", "rflags") == 0
