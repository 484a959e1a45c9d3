"""A small ELF writer for kernel-shaped test images (sections, symbols, RELA entries).

The images have what the kernel audit reads from a vmlinux (section headers, ``.symtab``,
an allocated ``.rela.dyn``).  With ``segments=True`` each allocated section also gets a
``PT_LOAD`` program header (readable, writable with ``SHF_WRITE``, executable with
``SHF_EXEC``), so ``Machine.load_elf`` can load the image as a kernel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SHF_WRITE, SHF_ALLOC, SHF_EXEC = 1, 2, 4
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2


@dataclass
class Sec:
    name: str
    addr: int
    data: bytes
    flags: int = SHF_ALLOC
    type: int = 1  # SHT_PROGBITS


@dataclass
class KernelImage:
    machine: int
    e_type: int = 2
    sections: list[Sec] = field(default_factory=list)
    symbols: list[tuple[str, int, int, int, str]] = field(default_factory=list)
    """(name, address, size, STT type, section name)."""
    relas: list[tuple[int, int, int]] = field(default_factory=list)
    """(offset, type, addend) of ``.rela.dyn``."""
    segments: bool = False
    """Whether to write a ``PT_LOAD`` program header per allocated section."""
    rela_addr: int = 0x7000
    """Where ``.rela.dyn`` is linked."""

    def sym(self, name: str, addr: int, size: int = 0, kind: int = STT_FUNC,
            section: str = ".text") -> None:
        self.symbols.append((name, addr, size, kind, section))

    def build(self) -> bytes:
        secs = list(self.sections)
        if self.relas:
            rela = b"".join(struct.pack("<QQq", o, t, a) for o, t, a in self.relas)
            secs.append(Sec(".rela.dyn", self.rela_addr, rela, SHF_ALLOC, 4))
        index = {s.name: i + 1 for i, s in enumerate(secs)}
        strtab = bytearray(b"\0")
        symtab = bytearray(b"\0" * 24)
        for name, addr, size, kind, sec in self.symbols:
            off = len(strtab)
            strtab += name.encode() + b"\0"
            symtab += struct.pack("<IBBHQQ", off, (1 << 4) | kind, 0, index[sec], addr, size)
        sym_i = len(secs) + 1
        secs.append(Sec(".symtab", 0, bytes(symtab), 0, 2))
        secs.append(Sec(".strtab", 0, bytes(strtab), 0, 3))
        shstr = bytearray(b"\0")
        names = []
        for s in secs:
            names.append(len(shstr))
            shstr += s.name.encode() + b"\0"
        names.append(len(shstr))
        shstr += b".shstrtab\0"
        secs.append(Sec(".shstrtab", 0, bytes(shstr), 0, 3))
        body = bytearray(b"\0" * 64)
        offsets = []
        for s in secs:
            while len(body) % 8:
                body.append(0)
            offsets.append(len(body))
            body += s.data
        while len(body) % 8:
            body.append(0)
        phdrs = self._phdrs(secs, offsets) if self.segments else []
        phoff = len(body) if phdrs else 0
        body += b"".join(phdrs)
        shoff = len(body)
        body += b"\0" * 64
        for i, s in enumerate(secs):
            link = sym_i + 1 if s.name == ".symtab" else 0
            entsize = 24 if s.type in (2, 4) else 0
            body += struct.pack("<IIQQQQIIQQ", names[i], s.type, s.flags, s.addr, offsets[i],
                                len(s.data), link, 0, 8, entsize)
        ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
        header = ident + struct.pack("<HHIQQQIHHHHHH", self.e_type, self.machine, 1, 0, phoff,
                                     shoff, 0, 64, 56 if phdrs else 0, len(phdrs), 64,
                                     len(secs) + 1, len(secs))
        body[:64] = header
        return bytes(body)

    @staticmethod
    def _phdrs(secs: list[Sec], offsets: list[int]) -> list[bytes]:
        """One ``PT_LOAD`` per allocated section with contents."""
        out = []
        for s, off in zip(secs, offsets, strict=True):
            if not s.flags & SHF_ALLOC or not s.data:
                continue
            flags = 4 | (2 if s.flags & SHF_WRITE else 0) | (1 if s.flags & SHF_EXEC else 0)
            out.append(struct.pack("<IIQQQQQQ", 1, flags, off, s.addr, s.addr, len(s.data),
                                   len(s.data), 0x1000))
        return out


# -- kernel images with ftrace sites (tests/test_ftrace.py) ------------------------------

RV_CNOP4 = bytes.fromhex("0100") * 4
"""Four ``c.nop``: a riscv64 patchable function entry as the compiler emits it."""
X86_TEXT = 0xFFFF_FFFF_8100_0000
X86_DATA = 0xFFFF_FFFF_8200_0000
RV_TEXT = 0xFFFF_FFFF_8000_2000
RV_DATA = 0xFFFF_FFFF_8100_0000
A64_TEXT = 0xFFFF_8000_0801_0000
A64_DATA = 0xFFFF_8000_0940_0000


def call_rel32(at: int, target: int) -> bytes:
    """x86_64 ``call rel32`` at ``at`` to ``target``."""
    return b"\xe8" + (target - (at + 5)).to_bytes(4, "little", signed=True)


def x86_text() -> bytes:
    """x86_64 text: ``__fentry__``, ``f`` (fentry call), ``g`` (ENDBR64 then fentry call),
    ``h`` (no site) and ``stub`` (returns 42)."""
    code = bytearray(b"\xcc" * 0x100)
    code[0x00:0x01] = b"\xc3"                                       # __fentry__: ret
    f = call_rel32(X86_TEXT + 0x10, X86_TEXT) + bytes.fromhex("488d0437c3")  # lea; ret
    code[0x10:0x10 + len(f)] = f
    g = (bytes.fromhex("f30f1efa") + call_rel32(X86_TEXT + 0x24, X86_TEXT)
         + bytes.fromhex("4889f8" "4883c001" "c3"))                 # mov rax,rdi; add rax,1
    code[0x20:0x20 + len(g)] = g
    code[0x40:0x46] = bytes.fromhex("b807000000c3")                 # h: mov eax,7; ret
    code[0x60:0x66] = bytes.fromhex("b82a000000c3")                 # stub: mov eax,42; ret
    return bytes(code)


def ftrace_kernel(machine: int, text_addr: int, text: bytes, data_addr: int,
                  table: list[int], funcs: dict[str, tuple[int, int]], e_type: int = 2,
                  relas: list[tuple[int, int, int]] | None = None) -> KernelImage:
    """A loadable kernel image: ``.text``, an ``__mcount_loc`` table in ``.init.data``,
    ``_stext``/``_etext`` and the given functions (name -> (offset, size))."""
    img = KernelImage(machine, e_type=e_type, segments=True, relas=relas or [])
    img.sections.append(Sec(".text", text_addr, text, SHF_ALLOC | SHF_EXEC))
    data = b"".join(struct.pack("<Q", e) for e in table)
    img.sections.append(Sec(".init.data", data_addr, data, SHF_ALLOC | SHF_WRITE))
    for name, (off, size) in funcs.items():
        img.sym(name, text_addr + off, size)
    img.sym("_stext", text_addr, 0, STT_NOTYPE)
    img.sym("_etext", text_addr + len(text), 0, STT_NOTYPE)
    img.sym("__start_mcount_loc", data_addr, 0, STT_NOTYPE, ".init.data")
    img.sym("__stop_mcount_loc", data_addr + len(data), 0, STT_NOTYPE, ".init.data")
    return img


X86_FUNCS = {"__fentry__": (0x00, 1), "f": (0x10, 10), "g": (0x20, 17), "h": (0x40, 6),
             "stub": (0x60, 6)}


def rv_text() -> bytes:
    """riscv64 text: ``f`` (four c.nop, add, ret) and ``stub`` at 0x20 (returns 42)."""
    code = bytearray(b"\0" * 0x40)
    f = RV_CNOP4 + struct.pack("<I", 0x00B50533) + struct.pack("<H", 0x8082)  # add; ret
    code[0:len(f)] = f
    stub = struct.pack("<I", 0x02A00513) + struct.pack("<H", 0x8082)          # li a0,42; ret
    code[0x20:0x20 + len(stub)] = stub
    return bytes(code)


