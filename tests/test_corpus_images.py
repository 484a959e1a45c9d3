"""Checks of the bundled sample corpus in kprobe_ref/corpus.

* every function named in functions.json exists, with a nonzero size, in every
  image of the ISAs it is meant for, and every function in an image is named;
* manifest.json's hashes and sizes match the committed images and sources;
* on x86_64, aarch64 and riscv64 every callable case runs in unicorn to its
  return address without faulting; the C functions give the same result (and
  leave the same buffer contents) on all three ISAs and in both image kinds;
  the assembly functions' branch bits are seen both set and clear;
* each ISA's classes.S really contains the instruction classes it is meant to
  (capstone for x86_64, aarch64 and riscv64, pypcode for loongarch64).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import capstone
import pypcode
import pytest
import unicorn
from elftools.elf import elffile
from unicorn import arm64_const, riscv_const, x86_const

from tests.helpers import KERNEL_TEXT

CORPUS = Path(__file__).resolve().parent.parent / "kprobe_ref" / "corpus"
ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
RUN_ISAS = ("x86_64", "aarch64", "riscv64")
KINDS = ("kernel", "user")
MASK64 = (1 << 64) - 1

FUNCTIONS: dict[str, dict[str, Any]] = json.loads((CORPUS / "functions.json").read_text())
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text())

# Addresses of the harness's own mappings (below every image, below 2**47).
STOP = 0x0050_0000_0
BUF_BASE = 0x0060_0000_0
BUF_STRIDE = 0x10000
STACK_BASE = 0x0070_0000_0
STACK_SIZE = 0x40000
MAX_STEPS = 20_000_000


def isas_of(name: str) -> tuple[str, ...]:
    """The ISAs whose images hold the function."""
    return tuple(FUNCTIONS[name].get("isas", ISAS))


@dataclass
class Func:
    """A function symbol of an image."""

    addr: int
    size: int


@dataclass
class Image:
    """A loaded corpus image: its segments and function symbols."""

    path: Path
    segments: list[tuple[int, bytes, int, int]] = field(default_factory=list)
    funcs: dict[str, Func] = field(default_factory=dict)
    text: tuple[int, bytes] = (0, b"")

    def code(self, name: str) -> tuple[int, bytes]:
        """Address and bytes of a function."""
        f = self.funcs[name]
        base, data = self.text
        return f.addr, data[f.addr - base : f.addr - base + f.size]


@cache
def load(isa: str, kind: str) -> Image:
    """Parse one image with pyelftools."""
    path = CORPUS / isa / f"{kind}.elf"
    img = Image(path)
    with path.open("rb") as fh:
        elf = elffile.ELFFile(fh)
        assert elf.header.e_type == "ET_EXEC"
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                img.segments.append((seg["p_vaddr"], seg.data(), seg["p_memsz"], seg["p_flags"]))
        symtab = elf.get_section_by_name(".symtab")
        assert symtab is not None, f"{path} has no symbol table"
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC":
                img.funcs[sym.name] = Func(sym["st_value"], sym["st_size"])
        text = elf.get_section_by_name(".text")
        img.text = (text["sh_addr"], text.data())
        for sec in elf.iter_sections():
            assert not sec.name.startswith(".rela"), f"{path} has relocations"
    return img


# ---------------------------------------------------------------- symbols


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("isa", ISAS)
def test_symbols_match_functions_json(isa: str, kind: str) -> None:
    img = load(isa, kind)
    expected = {n for n in FUNCTIONS if isa in isas_of(n)}
    missing = sorted(expected - set(img.funcs))
    assert not missing, f"{isa}/{kind}: missing {missing}"
    unnamed = sorted(set(img.funcs) - expected)
    assert not unnamed, f"{isa}/{kind}: functions not in functions.json: {unnamed}"
    zero = sorted(n for n in expected if img.funcs[n].size == 0)
    assert not zero, f"{isa}/{kind}: zero-sized {zero}"


@pytest.mark.parametrize("isa", ISAS)
def test_image_layout(isa: str) -> None:
    for kind, base in (("kernel", KERNEL_TEXT[isa]), ("user", 0x10000000)):
        img = load(isa, kind)
        starts = sorted(s[0] for s in img.segments)
        assert starts[0] == base
        assert all(s % 0x1000 == 0 for s in starts)
        assert img.text[0] == base


def test_functions_json_shape() -> None:
    for name, spec in FUNCTIONS.items():
        args = spec["args"]
        assert all(a in ("int", "buf") for a in args), name
        assert spec["ret"] in ("u8", "u16", "u32", "u64", "i32", "i64"), name
        assert set(isas_of(name)) <= set(ISAS), name
        for case in spec["cases"]:
            assert len(case) == len(args), (name, case)
            for kind, value in zip(args, case, strict=True):
                if kind == "int":
                    assert isinstance(value, int), (name, case)
                else:
                    assert isinstance(value, dict) and "hex" in value, (name, case)
                    bytes.fromhex(value["hex"])
        if spec.get("callable", True):
            assert len(spec["cases"]) >= 1, name


# ---------------------------------------------------------------- manifest


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_matches_files() -> None:
    images = MANIFEST["images"]
    assert set(images) == {f"{isa}/{kind}.elf" for isa in ISAS for kind in KINDS}
    for rel, rec in images.items():
        path = CORPUS / rel
        assert rec["size"] == path.stat().st_size, rel
        assert rec["sha256"] == sha256(path), rel
        assert rec["command"][:4] == ["python", "-m", "ziglang", "cc"]
    sources = MANIFEST["sources"]
    on_disk = {str(p.relative_to(CORPUS)) for p in (CORPUS / "src").rglob("*") if p.is_file()}
    assert on_disk <= set(sources)
    for rel, rec in sources.items():
        path = CORPUS / rel
        assert rec["size"] == path.stat().st_size, rel
        assert rec["sha256"] == sha256(path), rel
    assert MANIFEST["zig_version"] == MANIFEST["ziglang_package"]


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class Abi:
    """How to call a C function on one ISA under unicorn."""

    arch: int
    mode: int
    args: tuple[int, ...]
    ret: int
    sp: int
    pc: int
    link: int | None  # register holding the return address; None: on the stack


ABIS: dict[str, Abi] = {
    "x86_64": Abi(
        unicorn.UC_ARCH_X86,
        unicorn.UC_MODE_64,
        (
            x86_const.UC_X86_REG_RDI,
            x86_const.UC_X86_REG_RSI,
            x86_const.UC_X86_REG_RDX,
            x86_const.UC_X86_REG_RCX,
            x86_const.UC_X86_REG_R8,
            x86_const.UC_X86_REG_R9,
        ),
        x86_const.UC_X86_REG_RAX,
        x86_const.UC_X86_REG_RSP,
        x86_const.UC_X86_REG_RIP,
        None,
    ),
    "aarch64": Abi(
        unicorn.UC_ARCH_ARM64,
        unicorn.UC_MODE_ARM,
        tuple(getattr(arm64_const, f"UC_ARM64_REG_X{i}") for i in range(8)),
        arm64_const.UC_ARM64_REG_X0,
        arm64_const.UC_ARM64_REG_SP,
        arm64_const.UC_ARM64_REG_PC,
        arm64_const.UC_ARM64_REG_X30,
    ),
    "riscv64": Abi(
        unicorn.UC_ARCH_RISCV,
        unicorn.UC_MODE_RISCV64,
        tuple(getattr(riscv_const, f"UC_RISCV_REG_A{i}") for i in range(8)),
        riscv_const.UC_RISCV_REG_A0,
        riscv_const.UC_RISCV_REG_SP,
        riscv_const.UC_RISCV_REG_PC,
        riscv_const.UC_RISCV_REG_RA,
    ),
}

PROT = {1: unicorn.UC_PROT_EXEC, 2: unicorn.UC_PROT_WRITE, 4: unicorn.UC_PROT_READ}


def new_cpu(isa: str, kind: str) -> Any:
    """A fresh unicorn CPU with the image, a stack and a stop page mapped."""
    abi = ABIS[isa]
    uc = unicorn.Uc(abi.arch, abi.mode)
    if isa == "x86_64":
        # one-to-one virtual TLB: the kernel image sits in the upper half, past the
        # 2**47 bytes a plain x86_64 unicorn's page walk reaches
        uc.ctl_set_tlb_mode(unicorn.unicorn_const.UC_TLB_VIRTUAL)
    for vaddr, data, memsz, flags in load(isa, kind).segments:
        start = vaddr & ~0xFFF
        end = (vaddr + memsz + 0xFFF) & ~0xFFF
        perms = 0
        for bit, prot in PROT.items():
            if flags & bit:
                perms |= prot
        uc.mem_map(start, end - start, perms)
        uc.mem_write(vaddr, data)
    uc.mem_map(STOP, 0x1000, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_map(STACK_BASE, STACK_SIZE)
    if isa == "aarch64":
        uc.reg_write(arm64_const.UC_ARM64_REG_CPACR_EL1, 3 << 20)  # FP/SIMD on
    return uc


def ret_value(value: int, ret: str) -> int:
    """The return register reduced to the function's C return type."""
    bits = int(ret[1:])
    value &= (1 << bits) - 1
    if ret[0] == "i" and value >> (bits - 1):
        value -= 1 << bits
    return value


@dataclass(frozen=True)
class Outcome:
    """What one call left behind: the result and the contents of its buffers."""

    result: int
    buffers: tuple[bytes, ...]


def call(uc: Any, isa: str, addr: int, spec: dict[str, Any], case: list[Any]) -> Outcome:
    """Call the function at addr with one case's arguments; run to the return."""
    abi = ABIS[isa]
    regs: list[int] = []
    buffers: list[tuple[int, int]] = []
    for i, (kind, value) in enumerate(zip(spec["args"], case, strict=True)):
        if kind == "int":
            regs.append(value & MASK64)
            continue
        size = max(256, value.get("size", 256))
        base = BUF_BASE + i * BUF_STRIDE
        assert size <= BUF_STRIDE
        with contextlib.suppress(unicorn.UcError):  # mapped by an earlier case
            uc.mem_map(base, BUF_STRIDE)
        data = bytes.fromhex(value["hex"])
        assert len(data) <= size
        uc.mem_write(base, data + bytes(size - len(data)))
        regs.append(base)
        buffers.append((base, size))
    for reg, value in zip(abi.args, regs, strict=False):
        uc.reg_write(reg, value)
    sp = STACK_BASE + STACK_SIZE - 0x100
    if abi.link is None:
        sp -= 8  # x86_64: the call pushed the return address; rsp + 8 is 16-aligned
        uc.mem_write(sp, STOP.to_bytes(8, "little"))
    else:
        uc.reg_write(abi.link, STOP)
    uc.reg_write(abi.sp, sp)
    try:
        uc.emu_start(addr, STOP, count=MAX_STEPS)
    except unicorn.UcError as exc:
        pc = uc.reg_read(abi.pc)
        raise AssertionError(f"fault at {pc:#x}: {exc}") from exc
    pc = uc.reg_read(abi.pc)
    assert pc == STOP, f"did not return (pc {pc:#x} after {MAX_STEPS} steps?)"
    assert uc.reg_read(abi.sp) == sp + (8 if abi.link is None else 0), "stack unbalanced"
    return Outcome(
        ret_value(uc.reg_read(abi.ret), spec["ret"]),
        tuple(bytes(uc.mem_read(b, n)) for b, n in buffers),
    )


def callable_names(isa: str) -> Iterator[str]:
    """Functions with cases to run on the ISA."""
    for name, spec in FUNCTIONS.items():
        if isa in isas_of(name) and spec.get("callable", True):
            yield name


@cache
def run_all(isa: str, kind: str) -> dict[str, list[Outcome]]:
    """Run every callable function's cases, each function on a fresh image."""
    out: dict[str, list[Outcome]] = {}
    img = load(isa, kind)
    for name in callable_names(isa):
        spec = FUNCTIONS[name]
        uc = new_cpu(isa, kind)
        results = []
        for case in spec["cases"]:
            try:
                results.append(call(uc, isa, img.funcs[name].addr, spec, case))
            except AssertionError as exc:
                raise AssertionError(f"{isa}/{kind} {name}{tuple(case)}: {exc}") from exc
        out[name] = results
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("isa", RUN_ISAS)
def test_cases_run(isa: str, kind: str) -> None:
    results = run_all(isa, kind)
    assert set(results) == set(callable_names(isa))


def test_c_results_agree_across_isas() -> None:
    reference = run_all("x86_64", "kernel")
    compared = 0
    for name in callable_names("x86_64"):
        if "isas" in FUNCTIONS[name]:
            continue
        for isa in RUN_ISAS:
            for kind in KINDS:
                got = run_all(isa, kind)[name]
                assert got == reference[name], f"{name}: {isa}/{kind} differs from x86_64/kernel"
        compared += 1
    assert compared >= 30


@pytest.mark.parametrize("isa", RUN_ISAS)
def test_branch_bits_seen_both_ways(isa: str) -> None:
    for name in callable_names(isa):
        nbits = FUNCTIONS[name].get("branch_bits")
        if not nbits:
            continue
        results = [o.result for o in run_all(isa, "kernel")[name]]
        for bit in range(nbits):
            seen = {(r >> bit) & 1 for r in results}
            assert seen == {0, 1}, f"{name}: branch bit {bit} only ever {seen}"


@pytest.mark.parametrize("isa", RUN_ISAS)
def test_asm_paths_change_results(isa: str) -> None:
    """Every asm function gives at least two different results over its cases."""
    for name in callable_names(isa):
        if "isas" in FUNCTIONS[name] and len(FUNCTIONS[name]["cases"]) > 1:
            results = {o.result for o in run_all(isa, "kernel")[name]}
            assert len(results) > 1, name


# ---------------------------------------------------------------- mnemonics


Insn = tuple[int, int, str, str, bytes]  # address, size, mnemonic, operands, bytes


def disasm(isa: str, addr: int, code: bytes) -> list[Insn]:
    """Disassemble one function; it must decode completely."""
    if isa == "loongarch64":
        ctx = pypcode.Context("Loongarch:LE:64:lp64d")
        out = [
            (
                i.addr.offset,
                i.length,
                i.mnem.lower(),
                i.body.lower(),
                code[i.addr.offset - addr : i.addr.offset - addr + i.length],
            )
            for i in ctx.disassemble(code, addr).instructions
        ]
    else:
        arch, mode = {
            "x86_64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
            "aarch64": (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM),
            "riscv64": (
                capstone.CS_ARCH_RISCV,
                capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC,
            ),
        }[isa]
        md = capstone.Cs(arch, mode)
        out = [
            (i.address, i.size, i.mnemonic, i.op_str, bytes(i.bytes)) for i in md.disasm(code, addr)
        ]
    assert sum(i[1] for i in out) == len(code), "function does not decode completely"
    return out


def classes_insns(isa: str) -> list[Insn]:
    """All instructions of the ISA's classes.S functions in the kernel image."""
    img = load(isa, "kernel")
    out: list[Insn] = []
    for name in FUNCTIONS:
        if "isas" in FUNCTIONS[name] and isa in isas_of(name):
            out += disasm(isa, *img.code(name))
    return out


JCC = ("jg", "jle", "jl", "jge", "ja", "jb", "jo", "js", "jp")


def rip(i: Insn) -> bool:
    """Whether an x86 instruction has a RIP-relative operand."""
    return "rip" in i[3]


def x86_prefixes(i: Insn) -> bytes:
    """Legacy and REX prefix bytes of an x86 instruction."""
    n = 0
    while n < len(i[4]) and (i[4][n] in (0x66, 0x67, 0xF2, 0xF3) or 0x40 <= i[4][n] <= 0x4F):
        n += 1
    return i[4][:n]


def has_imm_after_disp(i: Insn) -> bool:
    """RIP-relative with an immediate operand (which follows the displacement)."""
    return rip(i) and any(
        part.strip().startswith(("0x", "-0x")) or part.strip().isdigit()
        for part in i[3].split(",")[1:]
    )


def sized(mnem: str, size: int) -> Callable[[Insn], bool]:
    """An instruction of the given mnemonic and encoded size in bytes."""
    return lambda i: i[2] == mnem and i[1] == size


def named(mnem: str) -> Callable[[Insn], bool]:
    """An instruction of the given mnemonic."""
    return lambda i: i[2] == mnem


X86_CLASSES: dict[str, Callable[[Insn], bool]] = {
    **{f"{cc} rel8": sized(cc, 2) for cc in JCC},
    **{f"{cc} rel32": sized(cc, 6) for cc in JCC},
    "jmp rel8": lambda i: i[4][0] == 0xEB,
    "jmp rel32": lambda i: i[4][0] == 0xE9,
    "call rel32": lambda i: i[4][0] == 0xE8,
    "ret": lambda i: i[4] == b"\xc3",
    "ret imm16": lambda i: i[4][0] == 0xC2,
    "loop": lambda i: i[4][0] == 0xE2,
    "loope": lambda i: i[4][0] == 0xE1,
    "loopne": lambda i: i[4][0] == 0xE0,
    "jrcxz": lambda i: i[4][0] == 0xE3,
    "call reg": lambda i: i[2] == "call" and "[" not in i[3] and not i[3].startswith("0x"),
    "jmp reg": lambda i: i[2] == "jmp" and "[" not in i[3] and not i[3].startswith("0x"),
    "jmp table": lambda i: i[2] == "jmp" and "*8" in i[3],
    "call table": lambda i: i[2] == "call" and "*8" in i[3],
    "call [rip]": lambda i: i[2] == "call" and rip(i),
    "jmp [rip]": lambda i: i[2] == "jmp" and rip(i),
    "mov rip load": lambda i: i[2] == "mov" and rip(i) and i[3].split(",")[0] in ("eax",),
    "mov rip store": lambda i: i[2] == "mov" and rip(i) and i[3].startswith("dword ptr"),
    "0x66 rip": lambda i: rip(i) and 0x66 in x86_prefixes(i),
    "rex.w rip": lambda i: rip(i) and any(0x48 <= b <= 0x4F for b in x86_prefixes(i)),
    "sse rip": lambda i: rip(i) and i[2] in ("movq", "movdqu"),
    "vex rip": lambda i: rip(i) and i[4][0] in (0xC4, 0xC5),
    "cmp imm after disp": lambda i: i[2] == "cmp" and has_imm_after_disp(i),
    "imul imm after disp": lambda i: i[2] == "imul" and has_imm_after_disp(i),
    "lea rip": lambda i: i[2] == "lea" and rip(i),
    "push": lambda i: i[2] == "push",
    "pop": lambda i: i[2] == "pop",
    "cmov": lambda i: i[2].startswith("cmov"),
    "setcc": lambda i: i[2].startswith("set"),
}


def a64_literal(mnem: str, reg: str) -> Callable[[Insn], bool]:
    """An AArch64 literal load of the given mnemonic into a register class."""
    return lambda i: i[2] == mnem and i[3].startswith(reg) and "[" not in i[3]


A64_CLASSES: dict[str, Callable[[Insn], bool]] = {
    "b": lambda i: i[2] == "b",
    "bl": lambda i: i[2] == "bl",
    **{f"b.{c}": named(f"b.{c}") for c in ("eq", "ne", "lt", "ge", "hi", "lo", "mi", "vs")},
    "cbz": lambda i: i[2] == "cbz",
    "cbnz": lambda i: i[2] == "cbnz",
    "tbz": lambda i: i[2] == "tbz",
    "tbnz": lambda i: i[2] == "tbnz",
    "br": lambda i: i[2] == "br",
    "blr": lambda i: i[2] == "blr",
    "ret": lambda i: i[2] == "ret" and i[3] == "",
    "ret xN": lambda i: i[2] == "ret" and i[3] not in ("", "x30"),
    "adr": lambda i: i[2] == "adr",
    "adrp": lambda i: i[2] == "adrp",
    "ldr w literal": a64_literal("ldr", "w"),
    "ldr x literal": a64_literal("ldr", "x"),
    "ldrsw literal": a64_literal("ldrsw", "x"),
    "ldr s literal": a64_literal("ldr", "s"),
    "ldr d literal": a64_literal("ldr", "d"),
    "ldr q literal": a64_literal("ldr", "q"),
    "prfm literal": lambda i: i[2] == "prfm" and "[" not in i[3],
    "nop": lambda i: i[2] == "nop",
}


def rv_call_via_ra(i: Insn) -> bool:
    """A 32-bit JALR whose rd and rs1 are both ra (AUIPC ra + JALR ra, lo(ra))."""
    word = int.from_bytes(i[4], "little")
    return i[2] == "jalr" and i[1] == 4 and (word >> 7) & 31 == 1 and (word >> 15) & 31 == 1


RV_CLASSES: dict[str, Callable[[Insn], bool]] = {
    "jal": sized("jal", 4),
    "jalr": sized("jalr", 4),
    "jalr ra, ra": rv_call_via_ra,
    "auipc": sized("auipc", 4),
    **{m: sized(m, 4) for m in ("beq", "bne", "blt", "bge", "bltu", "bgeu")},
    **{m: sized(m, 2) for m in ("c.j", "c.jr", "c.jalr", "c.beqz", "c.bnez")},
}

# fmt: off
LA_MNEMONICS = (
    "pcaddi", "pcalau12i", "pcaddu12i", "pcaddu18i", "b", "bl", "jirl",
    "beq", "bne", "blt", "bge", "bltu", "bgeu", "beqz", "bnez",
    "bceqz", "bcnez", "movgr2cf",
)
# fmt: on

LA_CLASSES: dict[str, Callable[[Insn], bool]] = {
    **{m: named(m) for m in LA_MNEMONICS},
    "jirl ra, ra": lambda i: i[2] == "jirl" and i[3].replace(" ", "").startswith("ra,ra,"),
}

CLASSES = {
    "x86_64": X86_CLASSES,
    "aarch64": A64_CLASSES,
    "riscv64": RV_CLASSES,
    "loongarch64": LA_CLASSES,
}


@pytest.mark.parametrize("isa", ISAS)
def test_classes_present(isa: str) -> None:
    insns = classes_insns(isa)
    missing = [c for c, pred in CLASSES[isa].items() if not any(pred(i) for i in insns)]
    assert not missing, f"{isa} classes.S lacks {missing}"


@pytest.mark.parametrize("isa", ISAS)
def test_all_functions_decode(isa: str) -> None:
    img = load(isa, "kernel")
    for name in FUNCTIONS:
        if isa in isas_of(name):
            disasm(isa, *img.code(name))
