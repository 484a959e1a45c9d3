"""Print the speed of the P-code interpreter CPU on a small counting loop, per ISA.

Run: ``python benchmarks/pcode_speed.py [--iterations N]``.  The loop runs with the
generated fast path (the default) and on the generic closures alone
(``PcodeCpu(isa, fast=False)``), and the ratio of the two is printed.  For x86_64, aarch64
and riscv64 unicorn runs the same loop in the same process for comparison.  The loop is four
instructions: add to an accumulator, decrement a counter, compare/branch back; every
instruction after the first pass comes from the translation cache.
"""

from __future__ import annotations

import argparse
import importlib
import struct
import time
from collections.abc import Callable
from typing import Any

from kprobe_ref.sim.pcode import PcodeCpu


def _le32(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


CODE = 0x10000

LOOPS: dict[str, tuple[bytes, str, int]] = {
    # add rax, rcx; add rcx, 1; dec rdx; jnz loop
    "x86_64": (bytes.fromhex("4801c8" "4883c101" "48ffca" "75f4"), "rdx", 4),
    # add x0, x0, x1; add x1, x1, #1; subs x2, x2, #1; b.ne loop
    "aarch64": (_le32(0x8B010000, 0x91000421, 0xF1000442, 0x54FFFFA1), "x2", 4),
    # add a0, a0, a1; addi a1, a1, 1; addi a2, a2, -1; bnez a2, loop
    "riscv64": (_le32(0x00B50533, 0x00158593, 0xFFF60613, 0xFE061AE3), "x12", 4),
    # add.d a0, a0, a1; addi.d a1, a1, 1; addi.d a2, a2, -1; bnez a2, loop
    "loongarch64": (_le32(0x00109484, 0x02C004A5, 0x02FFFCC6, 0x47FFF4DF), "r6", 4),
}


def pcode_rate(isa: str, iterations: int, fast: bool = True) -> float:
    """Instructions per second of PcodeCpu on the loop (``fast``: with the fast path)."""
    code, counter, per_iter = LOOPS[isa]
    cpu = PcodeCpu(isa, fast=fast)
    cpu.map(CODE, 0x1000, "rx")
    cpu.mem_write(CODE, code)
    cpu.reg_write(counter, iterations)
    start = time.perf_counter()
    stop = cpu.run(CODE, frozenset({CODE + len(code)}), iterations * per_iter + 1)
    elapsed = time.perf_counter() - start
    assert stop.steps == iterations * per_iter, stop
    return stop.steps / elapsed


def unicorn_rate(isa: str, iterations: int) -> float | None:
    """Instructions per second of unicorn on the same loop, or None without unicorn."""
    try:
        unicorn: Any = importlib.import_module("unicorn")
    except ImportError:
        return None
    code, counter, per_iter = LOOPS[isa]
    arch, mode, reg = _UNICORN[isa](unicorn)
    uc = unicorn.Uc(arch, mode)
    uc.mem_map(CODE, 0x1000, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    uc.mem_write(CODE, code)
    uc.reg_write(reg(counter), iterations)
    start = time.perf_counter()
    uc.emu_start(CODE, CODE + len(code))
    return iterations * per_iter / (time.perf_counter() - start)


def _x86(u: object) -> tuple[int, int, Callable[[str], int]]:
    c = u.x86_const  # type: ignore[attr-defined]
    return (u.UC_ARCH_X86, u.UC_MODE_64,  # type: ignore[attr-defined]
            lambda n: int(getattr(c, "UC_X86_REG_" + n.upper())))


def _arm64(u: object) -> tuple[int, int, Callable[[str], int]]:
    c = u.arm64_const  # type: ignore[attr-defined]
    return (u.UC_ARCH_ARM64, u.UC_MODE_ARM,  # type: ignore[attr-defined]
            lambda n: int(getattr(c, "UC_ARM64_REG_" + n.upper())))


def _riscv(u: object) -> tuple[int, int, Callable[[str], int]]:
    c = u.riscv_const  # type: ignore[attr-defined]
    return (u.UC_ARCH_RISCV, u.UC_MODE_RISCV64,  # type: ignore[attr-defined]
            lambda n: int(getattr(c, "UC_RISCV_REG_" + n.upper())))


_UNICORN: dict[str, Callable[[object], tuple[int, int, Callable[[str], int]]]] = {
    "x86_64": _x86,
    "aarch64": _arm64,
    "riscv64": _riscv,
}


def main() -> None:
    """Print one line per ISA."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    print(f"{'isa':<12} {'pcode insn/s':>14} {'closures insn/s':>16} {'x':>6} "
          f"{'unicorn insn/s':>16}")
    for isa in LOOPS:
        rate = pcode_rate(isa, args.iterations)
        generic = pcode_rate(isa, args.iterations, fast=False)
        ref = unicorn_rate(isa, args.iterations) if isa in _UNICORN else None
        ref_text = f"{ref:>16,.0f}" if ref is not None else f"{'n/a':>16}"
        print(f"{isa:<12} {rate:>14,.0f} {generic:>16,.0f} {rate / generic:>6.1f} {ref_text}")


if __name__ == "__main__":
    main()
