"""Assemble one instruction's text with the bundled toolchain (``reloc --asm``).

The ``ziglang`` wheel ships clang's integrated assembler for every ISA here; the text is
assembled at the start of ``.text`` of an object file and the section's bytes are returned.
Branch targets are written relative to the instruction (``jmp .+16``, ``b .+8``): a
symbol would leave a relocation to a place the assembler does not know, and is refused.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

__all__ = ["TARGETS", "AssemblyError", "assemble"]

TARGETS: dict[str, tuple[str, str]] = {
    "x86_64": ("x86_64-freestanding-none", ".intel_syntax noprefix\n"),
    "aarch64": ("aarch64-freestanding-none", ".arch armv8.2-a+lse+rcpc+crc+fp16+aes\n"),
    "riscv64": ("riscv64-freestanding-none", ".option norelax\n.option rvc\n"),
    "loongarch64": ("loongarch64-freestanding-none", ""),
}
"""ISA -> (zig target, directives put before the text).  x86_64 takes Intel syntax, and AT&T
syntax when the text is not Intel (``jmp .+16``: LLVM's Intel syntax has no ``.`` or ``$``
location counter); riscv64 may compress (``c.`` forms are accepted)."""


class AssemblyError(Exception):
    """The text does not assemble to position-independent bytes."""


def assemble(isa: str, text: str, timeout: float = 60.0) -> bytes:
    """The bytes of ``text`` assembled for ``isa``."""
    target, prelude = TARGETS[isa]
    try:
        return _assemble(isa, target, prelude, text, timeout)
    except AssemblyError:
        if isa != "x86_64":
            raise
        try:
            return _assemble(isa, target, ".att_syntax\n", text, timeout)
        except AssemblyError:
            pass
        raise


def _assemble(isa: str, target: str, prelude: str, text: str, timeout: float) -> bytes:
    with tempfile.TemporaryDirectory(prefix="kprobe-ref-asm-") as tmp:
        src, obj = Path(tmp) / "insn.S", Path(tmp) / "insn.o"
        src.write_text(f"{prelude}.text\n{text}\n")
        cmd = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-c", str(src),
               "-o", str(obj)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AssemblyError(f"cannot run the assembler ({exc})") from None
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln),
                         done.stderr.strip().splitlines()[0] if done.stderr.strip() else "")
            raise AssemblyError(f"does not assemble for {isa}: {first.split('error: ')[-1]}")
        with obj.open("rb") as fh:
            elf = ELFFile(fh)
            for sec in elf.iter_sections():
                if (isinstance(sec, RelocationSection) and sec.name.endswith(".text")
                        and sec.num_relocations()):
                    raise AssemblyError("the text refers to a symbol; write targets as "
                                        ".+OFFSET")
            text_sec = elf.get_section_by_name(".text")
            code = b"" if text_sec is None else bytes(text_sec.data())
    if not code:
        raise AssemblyError("the text assembles to no bytes")
    return code
