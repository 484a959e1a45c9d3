"""Deterministic mutations of ELF images and inputs files, for the fuzz tests and the
input-cost benchmark (``benchmarks/input_cost.py``).  ``mutate_elf(raw, seed)`` and
``mutate_inputs(text, seed)`` return the same bytes for the same seed."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

EHDR_FIELDS = {  # name: (offset, struct format)
    "class": (4, "B"), "data": (5, "B"), "type": (16, "H"), "machine": (18, "H"),
    "entry": (24, "Q"), "phoff": (32, "Q"), "shoff": (40, "Q"), "phentsize": (54, "H"),
    "phnum": (56, "H"), "shentsize": (58, "H"), "shnum": (60, "H"), "shstrndx": (62, "H"),
}
PHDR_FIELDS = {
    "p_type": (0, "I"), "p_flags": (4, "I"), "p_offset": (8, "Q"), "p_vaddr": (16, "Q"),
    "p_paddr": (24, "Q"), "p_filesz": (32, "Q"), "p_memsz": (40, "Q"), "p_align": (48, "Q"),
}
SHDR_FIELDS = {
    "sh_name": (0, "I"), "sh_type": (4, "I"), "sh_flags": (8, "Q"), "sh_addr": (16, "Q"),
    "sh_offset": (24, "Q"), "sh_size": (32, "Q"), "sh_link": (40, "I"), "sh_info": (44, "I"),
    "sh_addralign": (48, "Q"), "sh_entsize": (56, "Q"),
}
SYM_FIELDS = {"st_name": (0, "I"), "st_info": (4, "B"), "st_shndx": (6, "H"),
              "st_value": (8, "Q"), "st_size": (16, "Q")}


def _interesting(rng: random.Random, old: int, bits: int, size: int) -> int:
    top = (1 << bits) - 1
    choices = [0, 1, 2, top, top - 0xFFF, 1 << (bits - 1), size, size + 1, size - 1,
               old + 1, old - 1, old * 2, old << 12, old ^ (1 << rng.randrange(bits)),
               rng.randrange(1 << bits), 0x1000, 0xFFFF_FFFF_FFFF_F000, 0xFFFF_8000_0000_0000,
               0x2_0000_0000, 56, 64, 24, 3, 7]
    return rng.choice(choices) & top


def _poke(buf: bytearray, rng: random.Random, base: int, fields: dict[str, tuple[int, str]]
          ) -> None:
    off, fmt = rng.choice(list(fields.values()))
    at = base + off
    width = struct.calcsize(fmt)
    if at < 0 or at + width > len(buf):
        return
    old = struct.unpack_from("<" + fmt, buf, at)[0]
    struct.pack_into("<" + fmt, buf, at, _interesting(rng, old, 8 * width, len(buf)))


def _symtab(buf: bytes) -> tuple[int, int] | None:
    """Offset and size of the first symbol table section, if the headers are intact."""
    shoff, = struct.unpack_from("<Q", buf, 40)
    shnum, = struct.unpack_from("<H", buf, 60)
    for i in range(shnum):
        at = shoff + 64 * i
        if at + 64 > len(buf):
            return None
        if struct.unpack_from("<I", buf, at + 4)[0] == 2:
            return struct.unpack_from("<QQ", buf, at + 24)
    return None


def mutate_elf(raw: bytes, seed: int) -> bytes:
    """One to three field mutations of the ELF, program, section or symbol headers, a
    truncation, or a few flipped bytes."""
    rng = random.Random(seed)
    buf = bytearray(raw)
    phoff, = struct.unpack_from("<Q", raw, 32)
    shoff, = struct.unpack_from("<Q", raw, 40)
    phnum, = struct.unpack_from("<H", raw, 56)
    shnum, = struct.unpack_from("<H", raw, 60)
    sym = _symtab(raw)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if kind == 0:
            _poke(buf, rng, 0, EHDR_FIELDS)
        elif kind in (1, 2):
            _poke(buf, rng, phoff + 56 * rng.randrange(max(phnum, 1)), PHDR_FIELDS)
        elif kind == 3:
            _poke(buf, rng, shoff + 64 * rng.randrange(max(shnum, 1)), SHDR_FIELDS)
        elif kind == 4 and sym is not None:
            count = max(sym[1] // 24, 1)
            _poke(buf, rng, sym[0] + 24 * rng.randrange(count), SYM_FIELDS)
        elif kind == 5:
            del buf[rng.randrange(len(buf)):]
        else:
            for _ in range(rng.randint(1, 8)):
                if buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


def _mutate_value(rng: random.Random, value: Any, depth: int = 0) -> Any:
    replacements: list[Any] = [None, True, 0, -1, 1 << 70, 1.5, "", "int", "buf", "zz", [],
                               {}, [[1]], {"hex": "zz"}, {"size": -1}, {"hex": "00", "size": 1},
                               "x" * 300, [0] * 20]
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(replacements)
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        out = dict(value)
        if rng.random() < 0.2:
            del out[key]
        else:
            out[key] = _mutate_value(rng, value[key], depth + 1)
        return out
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        out_list = list(value)
        out_list[i] = _mutate_value(rng, value[i], depth + 1)
        return out_list
    return rng.choice(replacements)


def mutate_inputs(text: str, seed: int) -> bytes:
    """A structural mutation of an inputs file (a value replaced by one of another type),
    or a byte-level one (truncated, bytes flipped, not UTF-8, nested very deeply)."""
    rng = random.Random(seed)
    kind = rng.randrange(6)
    if kind <= 2:
        doc = json.loads(text)
        for _ in range(rng.randint(1, 3)):
            doc = _mutate_value(rng, doc)
        return json.dumps(doc).encode()
    data = bytearray(text.encode())
    if kind == 3:
        return bytes(data[: rng.randrange(len(data))])
    if kind == 4:
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return b"[" * rng.randint(1000, 200_000)
