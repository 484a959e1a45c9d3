"""The kernel's kprobe blacklist, computed from small kernel-shaped images.

Each rule of ``kprobe_ref/kernel/blacklist.py`` is exercised on an image built here
(``tests/kernel_elf.py``): the NOKPROBE table (plain words on x86_64, ``R_AARCH64_RELATIVE``
entries on arm64), the symbol-by-symbol areas with kallsyms extents, suffixed symbols,
jump-label, static-call and BUG sites, CFI preambles and init text; then the whole-image
audit and ``register_kprobe``'s refusal through the host hook.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from kprobe_ref import ProbeBuilder, register_kprobe
from kprobe_ref.errors import BlacklistedAddress
from kprobe_ref.kernel.blacklist import Blacklist, build_blacklist
from kprobe_ref.kernel.elfscan import KernelElf
from kprobe_ref.sim.machine import Machine
from kprobe_ref.tools.cli import main
from kprobe_ref.tools.verify import bundled_image
from tests.kernel_elf import (
    SHF_ALLOC,
    SHF_EXEC,
    SHF_WRITE,
    STT_NOTYPE,
    STT_OBJECT,
    KernelImage,
    Sec,
)

TEXT, INIT, DATA = 0x1000, 0x2000, 0x3000


def _rel32(at: int, target: int) -> bytes:
    return struct.pack("<i", target - at)


def kernel(machine: int = 62, relocated_table: bool = False) -> KernelImage:
    """A kernel with one function per rule (addresses in the comments)."""
    text = bytearray(b"\x90" * 0x100)
    text[0x5C:0x5E] = b"\x0f\x0b"  # ud2 at a BUG site
    table = struct.pack("<QQ", 0 if relocated_table else TEXT, DATA)  # f_a; a data address
    data = bytearray(0x400)
    data[0:16] = table
    data[0x100:0x110] = _rel32(DATA + 0x100, TEXT + 0x54) + b"\0" * 12  # jump label
    data[0x200:0x208] = _rel32(DATA + 0x200, TEXT + 0x58) + b"\0" * 4  # static call
    data[0x208:0x210] = _rel32(DATA + 0x208, INIT + 0x4) + b"\0" * 4  # static call, init
    data[0x300:0x30C] = _rel32(DATA + 0x300, TEXT + 0x5C) + b"\0" * 8  # BUG entry
    k = KernelImage(machine)
    k.sections = [Sec(".text", TEXT, bytes(text), SHF_ALLOC | SHF_EXEC),
                  Sec(".init.text", INIT, b"\x90" * 0x100, SHF_ALLOC | SHF_EXEC),
                  Sec(".data", DATA, bytes(data), SHF_ALLOC | SHF_WRITE)]
    if relocated_table:
        k.relas = [(DATA, 1027, TEXT)]
    funcs = [("f_a", 0x00, 0x10), ("f_b", 0x10, 0x10), ("n1", 0x20, 0x8), ("n2", 0x30, 0x10),
             ("e1", 0x40, 0x10), ("g", 0x50, 0x30), ("f_a.cold", 0x80, 0x8),
             ("__pfx_h", 0x90, 0x10), ("h", 0xA0, 0x10), ("h_alias", 0xA0, 0x10),
             ("tail", 0xB0, 0)]
    for name, off, size in funcs:
        k.sym(name, TEXT + off, size)
    k.sym("i1", INIT, 0x10, section=".init.text")
    labels = {"_stext": TEXT, "_etext": TEXT + 0x100, "_sinittext": INIT,
              "_einittext": INIT + 0x100, "__noinstr_text_start": TEXT + 0x20,
              "__noinstr_text_end": TEXT + 0x40, "__entry_text_start": TEXT + 0x40,
              "__entry_text_end": TEXT + 0x50, "__kprobes_text_start": TEXT + 0x100,
              "__kprobes_text_end": TEXT + 0x100}
    for name, addr in labels.items():
        k.sym(name, addr, 0, STT_NOTYPE, ".init.text" if addr >= INIT else ".text")
    for name, start, stop in (("kprobe_blacklist", 0, 0x10), ("__jump_table", 0x100, 0x110),
                              ("static_call_sites", 0x200, 0x210),
                              ("__bug_table", 0x300, 0x30C)):
        k.sym(f"__start_{name}", DATA + start, 0, STT_OBJECT, ".data")
        k.sym(f"__stop_{name}", DATA + stop, 0, STT_OBJECT, ".data")
    k.sym("_end", DATA + 0x400, 0, STT_NOTYPE, ".data")
    return k


@pytest.fixture
def x86_kernel(tmp_path: Path) -> Path:
    path = tmp_path / "vmlinux"
    path.write_bytes(kernel().build())
    return path


def _blacklist(path: Path) -> Blacklist:
    kelf = KernelElf(path)
    try:
        return build_blacklist(kelf)
    finally:
        kelf.close()


def test_each_rule_gives_its_cause(x86_kernel: Path) -> None:
    bl = _blacklist(x86_kernel)
    expect = {
        TEXT: "nokprobe", TEXT + 0xF: "nokprobe",  # kallsyms extent: up to f_b
        TEXT + 0x10: None,
        TEXT + 0x20: "noinstr-text", TEXT + 0x3F: "noinstr-text",
        TEXT + 0x40: "entry-text", TEXT + 0x4F: "entry-text",
        TEXT + 0x50: None, TEXT + 0x54: "jump-label", TEXT + 0x58: "static-call",
        TEXT + 0x5C: "bug", TEXT + 0x5D: None,
        TEXT + 0x80: "suffixed-symbol", TEXT + 0x87: "suffixed-symbol",
        TEXT + 0x90: "cfi-preamble", TEXT + 0x9F: "cfi-preamble", TEXT + 0xA0: None,
        INIT: "init-text", INIT + 0x4: "init-text",
    }
    assert {a: bl.cause(a) for a in expect} == expect
    assert bl.entries == {"nokprobe": 1, "noinstr-text": 2, "entry-text": 1}
    assert bl.skipped == {"nokprobe": 1}  # the table word pointing into .data


def test_static_call_sites_in_init_text_are_skipped(x86_kernel: Path) -> None:
    bl = _blacklist(x86_kernel)
    assert sorted(a for a, c in bl.sites.items() if c == "static-call") == [TEXT + 0x58]


def test_arm64_table_comes_from_relative_relocations(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(kernel(machine=183, relocated_table=True).build())
    bl = _blacklist(path)
    assert bl.cause(TEXT) == "nokprobe"
    assert bl.cause(TEXT + 0x80) == "suffixed-symbol"
    # without the relocation the word is 0, outside kernel text: no entry
    bare = kernel(machine=183)
    bare.sections[2] = Sec(".data", DATA, b"\0" * 0x400, SHF_ALLOC | SHF_WRITE)
    path.write_bytes(bare.build())
    assert _blacklist(path).cause(TEXT) is None


def test_whole_image_audit_records_every_address_once(
        x86_kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(x86_kernel), "--json", "--no-proofs"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["record"] == "image" and lines[-1]["record"] == "summary"
    funcs = {r["address"]: r for r in lines[1:-1]}
    assert len(funcs) == len(lines) - 2 == 11
    assert funcs[TEXT + 0xA0]["aliases"] == ["h_alias"]
    assert funcs[TEXT]["linux"] == "refused:nokprobe"
    assert funcs[TEXT]["reasons"] == {"blacklisted:nokprobe": 16}
    assert funcs[TEXT + 0x50]["linux"] == "allowed"
    assert {r["offset"]: r["reason"] for r in funcs[TEXT + 0x50]["rejected"]} == {
        4: "blacklisted:jump-label", 8: "blacklisted:static-call", 0xC: "blacklisted:bug"}
    assert funcs[TEXT + 0xB0]["size"] == 0x50  # size 0: up to the end of .text
    s = lines[-1]
    assert s["errors"] == 0 and s["functions"] == 11
    assert s["refused_functions"]["nokprobe"] == 1
    assert s["blacklist"]["noinstr-text"] == 8 + 16  # n1 and n2, one byte per nop


def test_whole_image_audit_checks_the_isa(x86_kernel: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(x86_kernel), "--arch", "aarch64", "--no-proofs"]) == 2
    assert "is a x86_64 image, not aarch64" in capsys.readouterr().err


def test_register_kprobe_refuses_a_blacklisted_address() -> None:
    m = Machine("x86_64")
    image = m.load_elf(bundled_image("x86_64"))
    name = sorted(image.functions)[0]
    start, size = image.functions[name], image.sizes[name]
    before = m.read(start, size)
    m.kprobe_blacklist = Blacklist(starts=[start], ends=[start + size], causes=["nokprobe"])
    with pytest.raises(BlacklistedAddress) as err:
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(start))
    assert err.value.reason == "blacklisted:nokprobe"
    assert m.read(start, size) == before and not m.points
    m.kprobe_blacklist = None
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(start))
