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
