"""The bad-input catalogue (``docs/errors.md``) is complete and true.

- Every site that raises a ``KprobeError`` (or a command-line bad-input error) and every
  exit site of the command line has a row (``tests/catalogue.py`` finds them in the source);
  a missing row fails with the row to add.
- Every row covers a site that still exists and names a test that exists.
- Each row whose test is ``test_bad_input_example[<id>]`` below is run: the example raises
  the row's error (or exits with its status and one line) with a message matching the row's
  template.  To add a row for a new ``raise``: add the row, then either name an existing
  test in its last column or add an example here under a new id.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from kprobe_ref import (
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import NO_REACH, Reach, SlotReach
from kprobe_ref.sim import Machine
from kprobe_ref.sim.elf import read_image
from kprobe_ref.tools.verify import bundled_image, load_specs
from tests.catalogue import CATALOGUE, FIELD, Row, find_sites, missing_test, read_rows

THIS = "tests/test_error_catalogue.py::test_bad_input_example"
BASE = 0x40_0000
KTEXT = 0xFFFF_FFFF_8100_0000
X86 = bytes.fromhex(
    "4889f8"          # 0x00 f: mov rax, rdi
    "4883c001"        # 0x03    add rax, 1
    "c3"              # 0x07    ret
    "cc"              # 0x08 trap: int3
    "90909090909090"  # 0x09
    "06" "90" "c3"    # 0x10 bad: (no instruction), nop, ret
)  # fmt: skip
TMP: list[Path] = []


def x86() -> Machine:
    m = Machine("x86_64")
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, X86)
    m.add_symbol("f", BASE, 8)
    m.add_symbol("trap", BASE + 8, 1)
    m.add_symbol("bad", BASE + 0x10, 3)
    return m


def kprobe(m: Machine, addr: int, **kw: Any) -> Any:
    b = ProbeBuilder().with_symbol_addr(addr)
    for k, v in kw.items():
        b = getattr(b, f"with_{k}")(v)
    return register_kprobe(m.manager, m.points, b)


def kretprobe(m: Machine, addr: int, **kw: Any) -> Any:
    b = KretprobeBuilder().with_symbol_addr(addr)
    for k, v in kw.items():
        b = getattr(b, f"with_{k}")(v)
    return register_kretprobe(m.manager, m.points, b)


def with_process() -> tuple[Machine, int]:
    m = Machine("x86_64")
    return m, m.spawn(bundled_image("x86_64", "user"))


def twice(unregister: Callable[..., None], register: Callable[[Machine], Any]) -> None:
    m = x86()
    h = register(m)
    unregister(m.manager, m.points, h)
    unregister(m.manager, m.points, h)


def aarch64_exclusive() -> None:
    m = Machine("aarch64")
    words = (0x885F7C20, 0x11000400, 0x88027C20, 0x35FFFFA2, 0xD65F03C0)
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, b"".join(w.to_bytes(4, "little") for w in words))
    m.add_symbol("loop", BASE, 20)
    kprobe(m, BASE + 4)


def uprobe_other_process() -> None:
    m, pid = with_process()
    other = m.spawn(bundled_image("x86_64", "user"))
    start = m.process(pid).image.functions["gcd"]
    register_uprobe(m.process(other).manager, m.process(other).points,
                    ProbeBuilder().with_symbol_addr(start).with_user_mode(pid))


def x86_out_of_reach() -> None:
    arch = get_arch("x86_64")
    d = arch.decode(bytes.fromhex("488b0500000000"), BASE, False)
    arch.build_slot(d, BASE + (1 << 33), False)


def slot_nowhere() -> None:
    """A required constraint whose window lies wholly outside the address space."""
    m = x86()
    reach = SlotReach((Reach(1 << 65, 0, -(1 << 31), (1 << 31) - 1, "a disp32"),))
    m.alloc_kernel_exec_memory(BASE, 64, reach)


def slot_no_room() -> None:
    """A required constraint whose window is all mapped."""
    m = x86()
    m.map(0x5000_0000, 0x20000, "r")
    reach = SlotReach((Reach(0x5000_0000, 0, -0x10000, 0, "a 64 KiB window"),))
    m.alloc_kernel_exec_memory(0x5000_0000, 64, reach)


def slot_placed_out_of_reach() -> None:
    """A host that ignores the reach rule: the engine checks the slot it gets."""
    m = x86()
    m.write(BASE, bytes.fromhex("488b0500000000c3"))  # mov rax, [rip]; ret
    m.alloc_kernel_exec_memory = lambda near, size, reach=NO_REACH: (  # type: ignore[method-assign]
        Machine.alloc_kernel_exec_memory(m, 1 << 40, size))
    kprobe(m, BASE)


def nested_too_deep() -> None:
    m = x86()
    m._depth = 8
    m.call(BASE)


def elf_file(patch: Callable[[bytearray], None], isa: str = "x86_64") -> Path:
    raw = bytearray(bundled_image(isa).read_bytes())
    patch(raw)
    path = Path(__import__("tempfile").mkdtemp()) / "image.elf"
    path.write_bytes(bytes(raw))
    return path


def _ph(raw: bytearray, field: int, fmt: str, value: int, index: int = 0) -> None:
    phoff = struct.unpack_from("<Q", raw, 32)[0]
    struct.pack_into(fmt, raw, phoff + 56 * index + field, value)


def _sh(raw: bytearray, field: int, fmt: str, value: int, sh_type: int) -> None:
    shoff, = struct.unpack_from("<Q", raw, 40)
    shnum, = struct.unpack_from("<H", raw, 60)
    for i in range(shnum):
        if struct.unpack_from("<I", raw, shoff + 64 * i + 4)[0] == sh_type:
            struct.pack_into(fmt, raw, shoff + 64 * i + field, value)
            return
    raise AssertionError("no such section")


def load(patch: Callable[[bytearray], None], isa: str | None = None) -> None:
    read_image(elf_file(patch), isa)


def specs(doc: object) -> None:
    load_specs(doc if isinstance(doc, str) else json.dumps(doc))


def spec(**fields: Any) -> None:
    specs({"f": {"args": ["int"], "cases": [[1]], **fields}})


def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    from kprobe_ref.tools.cli import main

    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, err.getvalue()


def cli_raising(exc: BaseException) -> tuple[int, str]:
    """The command line when the command itself raises ``exc``."""
    import kprobe_ref.tools.cli as cli_module

    def boom(_args: object) -> int:
        raise exc

    saved = cli_module._dispatch
    cli_module._dispatch = boom  # type: ignore[assignment]
    try:
        return cli("demo")
    finally:
        cli_module._dispatch = saved


def big_inputs_file() -> tuple[int, str]:
    path = Path(__import__("tempfile").mkdtemp()) / "big.json"
    with open(path, "wb") as fh:
        fh.truncate((64 << 20) + 1)
    return cli("audit", "--arch", "x86_64", "--inputs", str(path))


def not_utf8_inputs() -> tuple[int, str]:
    path = Path(__import__("tempfile").mkdtemp()) / "bad.json"
    path.write_bytes(b"\xff\xfe{}")
    return cli("audit", "--arch", "x86_64", "--inputs", str(path))


def divergent_audit() -> tuple[int, str]:
    import kprobe_ref.tools.audit as audit

    saved = audit.summarize

    def always_divergent(reports: Any) -> dict[str, object]:
        summary = saved(reports)
        summary["divergent"] = 1
        return summary

    audit.summarize = always_divergent  # type: ignore[assignment]
    try:
        return cli("audit", "--arch", "x86_64", "--no-proofs", "--function", "factorial")
    finally:
        audit.summarize = saved


def dwarf_failure(exc: Exception) -> None:
    import kprobe_ref.tools.audit as audit

    def broken(_path: object) -> dict[str, int]:
        raise exc

    saved = audit.integer_only_functions
    audit.integer_only_functions = broken  # type: ignore[assignment]
    try:
        audit.audit_image(bundled_image("x86_64"), "x86_64", ["gcd"])
    finally:
        audit.integer_only_functions = saved


def machine_error() -> tuple[int, str]:
    from kprobe_ref.sim import GuestFault

    return cli_raising(GuestFault(0x1000, "undefined instruction"))


def tmp_file(data: bytes, name: str = "vmlinux") -> Path:
    path = Path(__import__("tempfile").mkdtemp()) / name
    path.write_bytes(data)
    return path


def dyn_image(sh_type: int = 4) -> None:
    """Read an ET_DYN arm64 image whose one RELATIVE entry lies outside every segment (it
    has none), its ``.rela.dyn`` section of type ``sh_type`` (4: ``SHT_RELA``)."""
    from tests.kernel_elf import SHF_ALLOC, SHF_EXEC, KernelImage, Sec

    k = KernelImage(183, e_type=3, relas=[(KTEXT, 1027, 0)],
                    sections=[Sec(".text", KTEXT, b"\x1f\x20\x03\xd5" * 4, SHF_ALLOC | SHF_EXEC)])
    k.sym("f", KTEXT, 16)
    raw = bytearray(k.build())
    shoff, shnum = struct.unpack_from("<Q", raw, 40)[0], struct.unpack_from("<H", raw, 60)[0]
    for i in range(shnum):
        at = shoff + 64 * i
        if struct.unpack_from("<I", raw, at + 4)[0] == 4:  # the SHT_RELA section
            struct.pack_into("<I", raw, at + 4, sh_type)
    read_image(tmp_file(bytes(raw)), "aarch64")


def crowded_machine(stacks_only: bool) -> None:
    """A machine whose kernel address space has no free place for its own pages (the space's
    free-range queries answer "none"; the return stop's usual page is free when
    ``stacks_only``)."""
    from kprobe_ref.sim.machine import RETURN_STOP

    m = Machine("x86_64")
    m.kernel.is_free = (  # type: ignore[method-assign]
        lambda addr, _size: stacks_only and addr == RETURN_STOP)
    m.kernel.find_free = lambda *_a: None  # type: ignore[method-assign]
    m.alloc(0x1000)


def smp_machine(isa: str = "x86_64") -> Machine:
    """A two-CPU machine with one mapped page of code (zeroes) to start calls at."""
    m = Machine(isa, cpus=2)
    m.map(SMP_CODE, 0x1000, "rx")
    return m


SMP_CODE = 0x5000_0000


def smp_start_twice() -> None:
    m = smp_machine()
    m.start(0, SMP_CODE)
    m.start(0, SMP_CODE)


def smp_migrate_to_busy() -> None:
    m = smp_machine()
    m.start(0, SMP_CODE)
    m.start(1, SMP_CODE)
    m.migrate(0, 1)


def poke_twice() -> None:
    m = smp_machine()
    m.smp.patching.text_poke_bp(SMP_CODE, bytes.fromhex("0f1f440000"))
    m.smp.patching.text_poke_bp(SMP_CODE, bytes.fromhex("0f1f440000"))


def kernel_file(machine: int = 62) -> Path:
    """A kernel-shaped image (section headers and symbols only) with one function."""
    from tests.kernel_elf import SHF_ALLOC, SHF_EXEC, KernelImage, Sec

    k = KernelImage(machine, sections=[Sec(".text", KTEXT, b"\x90" * 16, SHF_ALLOC | SHF_EXEC)])
    k.sym("f", KTEXT, 16)
    return tmp_file(k.build())


def kernel_elf(data: bytes | None = None) -> Any:
    from kprobe_ref.kernel.elfscan import KernelElf

    return KernelElf(kernel_file() if data is None else tmp_file(data))


def kernel_read_outside() -> None:
    kelf = kernel_elf()
    try:
        kelf.read(KTEXT + 0x1000, 4)
    finally:
        kelf.close()


def image_host(call: Callable[[Any], object]) -> None:
    """``call`` on an ``ImageHost`` over a one-function kernel image."""
    from kprobe_ref.tools.kernel_audit.host import ImageHost

    kelf = kernel_elf()
    try:
        call(ImageHost(kelf, [(KTEXT, 16)], None))
    finally:
        kelf.close()


def kernel_elf_at(path: str) -> Any:
    from kprobe_ref.kernel.elfscan import KernelElf

    return KernelElf(path)


def trace_call_not_unique() -> None:
    """``--call twice()`` when two symbols are named ``twice``."""
    from kprobe_ref.tools.trace.runner import Runner

    runner = Runner.create("x86_64", None)
    gcd = runner.machine.lookup_symbol("gcd", None)[0]
    runner.machine.add_symbol("twice", gcd, 4)
    runner.machine.add_symbol("twice", gcd + 4, 4)
    runner._function("twice", None)


def file_to_vaddr(path: str, offset: int) -> None:
    from kprobe_ref.tools.trace.session import _file_to_vaddr

    _file_to_vaddr(path, offset)


def sweep_without_scheduler() -> tuple[int, str]:
    """``sweep --scheduler`` when connecting fails: the Dask client raises ``OSError`` (it
    does after its connect timeout, here without the wait)."""
    from kprobe_ref.tools.sweep import engine

    def unreachable(*_args: object, **_kw: object) -> list[dict[str, Any]]:
        raise OSError("Timed out trying to connect to tcp://127.0.0.1:9: timed out")

    saved = engine.sweep
    engine.sweep = unreachable
    try:
        return cli("sweep", "--arch", "aarch64", "--range", "0:0x1000", "--scheduler",
                   "tcp://127.0.0.1:9", "--results", str(tmp_file(b"").parent))
    finally:
        engine.sweep = saved


def reloc_length_past_the_bytes() -> tuple[int, str]:
    """``reloc`` when the length decoder reports more bytes than given.  No bundled decoder
    does (each reports 0 for bytes that end inside an instruction, explained as a
    rejection), so a decoder reading an x86_64 ``call rel32`` from its opcode alone stands
    in."""
    arch = get_arch("x86_64")
    cls = type(arch)
    saved = cls.insn_length
    cls.insn_length = lambda self, code, addr: 5  # type: ignore[method-assign]
    try:
        return cli("reloc", "--arch", "x86_64", "--bytes", "e8", "--addr", "0x401000")
    finally:
        cls.insn_length = saved  # type: ignore[method-assign]


def reloc_counterexample() -> tuple[int, str]:
    """``reloc`` on a RIP-relative ``mov`` under a mutated relocation rule that copies the
    displacement into the slot unchanged: Z3 finds the effective addresses differ."""
    import z3

    import kprobe_ref.proofs.explain as explain
    from kprobe_ref.proofs.relocate import rip_claim as saved

    def copied_unchanged(addr: int, slot: int, disp: int, length: int) -> Any:
        pre, _ = saved(addr, slot, disp, length)
        d = z3.SignExt(32, z3.BitVecVal(disp, 32))
        return pre, z3.BitVecVal(slot + length, 64) + d == z3.BitVecVal(addr + length, 64) + d

    setattr(explain, "rip_claim", copied_unchanged)  # noqa: B010
    try:
        return cli("reloc", "--arch", "x86_64", "--bytes", "488b0500001000", "--addr",
                   "0x401000", "--slot", "0x402000")
    finally:
        setattr(explain, "rip_claim", saved)  # noqa: B010


EXAMPLES: dict[str, Callable[[], object]] = {
    # -- the probe API --------------------------------------------------------------------
    "unknown-isa": lambda: get_arch("mips"),
    "x86-slot-out-of-reach": x86_out_of_reach,
    "unaligned": lambda: kprobe(Machine("aarch64"), BASE + 2),
    "forbidden": lambda: kprobe(x86(), 0x1000),
    "unmapped": lambda: kprobe(x86(), 0x5000_0000),
    "no-known-function": lambda: kprobe(x86(), BASE + 0x20),
    "undecodable-on-the-way": lambda: kprobe(x86(), BASE + 0x11),
    "not-a-boundary": lambda: kprobe(x86(), BASE + 1),
    "rejected-instruction": lambda: kprobe(x86(), BASE + 8),
    "exclusive-sequence": aarch64_exclusive,
    "user-mode-kprobe": lambda: kprobe(x86(), BASE, user_mode=1),
    "uprobe-other-process": uprobe_other_process,
    "wrong-builder": lambda: register_kprobe(x86().manager, x86().points, object()),  # type: ignore[arg-type]
    "double-unregister": lambda: twice(unregister_kprobe, lambda m: kprobe(m, BASE)),
    "no-address": lambda: kprobe(x86(), None),  # type: ignore[arg-type]
    "non-integer-address": lambda: kprobe(x86(), "f"),  # type: ignore[arg-type]
    "wrong-kretprobe-builder": lambda: register_kretprobe(
        x86().manager, x86().points, ProbeBuilder()),  # type: ignore[arg-type]
    "kretprobe-user-mismatch": lambda: kretprobe(x86(), BASE, user_mode=5),
    "maxactive": lambda: kretprobe(x86(), BASE, maxactive=0),
    "not-a-function-entry": lambda: kretprobe(x86(), BASE + 3),
    "double-unregister-kretprobe": lambda: twice(unregister_kretprobe,
                                                 lambda m: kretprobe(m, BASE)),
    "uprobe-without-pid": lambda: register_uprobe(
        with_process()[0].manager, x86().points, ProbeBuilder().with_symbol_addr(BASE)),
    "uprobe-kernel-tables": lambda: register_uprobe(
        x86().manager, x86().points, ProbeBuilder().with_symbol_addr(BASE).with_user_mode(1)),
    # -- the machine ----------------------------------------------------------------------
    "unknown-cpu": lambda: Machine("x86_64", cpu="qemu"),
    "unknown-pid": lambda: x86().process(12345),
    "too-many-arguments": lambda: x86().call(BASE, *range(20)),
    "nested-too-deep": nested_too_deep,
    "map-overlap": lambda: x86().map(BASE, 0x1000),
    "read-unmapped": lambda: x86().read(0x5000_0000, 4),
    "write-not-writable": lambda: x86().write_memory(BASE, b"\x90", None),
    "no-room-for-slots": slot_no_room,
    "slot-nowhere": slot_nowhere,
    "slot-placed-out-of-reach": slot_placed_out_of_reach,
    "free-unallocated": lambda: x86().free_kernel_exec_memory(BASE),
    # -- images ---------------------------------------------------------------------------
    "elf-phentsize": lambda: load(lambda r: struct.pack_into("<H", r, 54, 32)),
    "elf-phdrs-past-end": lambda: load(lambda r: struct.pack_into("<H", r, 56, 0xFFFF)),
    "elf-segment-past-end": lambda: load(lambda r: _ph(r, 32, "<Q", 1 << 40)),
    "elf-memsz-below-filesz": lambda: load(lambda r: _ph(r, 40, "<Q", 1)),
    "elf-past-2-64": lambda: load(lambda r: _ph(r, 16, "<Q", (1 << 64) - 0x10)),
    "elf-zero-fill": lambda: load(lambda r: _ph(r, 40, "<Q", 1 << 30)),
    "elf-shstrndx": lambda: load(lambda r: struct.pack_into("<H", r, 62, 0xFFF0)),
    "elf-section-past-end": lambda: load(lambda r: _sh(r, 32, "<Q", 1 << 40, 2)),
    "elf-symtab-entsize": lambda: load(lambda r: _sh(r, 56, "<Q", 7, 2)),
    "not-elf": lambda: load(lambda r: r.__setitem__(slice(0, 4), b"MZ\0\0")),
    "unreadable-image": lambda: read_image("/nonexistent/image.elf"),
    "elf-32-bit": lambda: load(lambda r: r.__setitem__(4, 1)),
    "elf-not-executable": lambda: load(lambda r: struct.pack_into("<H", r, 16, 1)),
    "elf-rela-type": lambda: dyn_image(1),
    "elf-rela-outside": lambda: dyn_image(),
    "machine-no-return-stop": lambda: crowded_machine(False),
    "machine-no-stacks": lambda: crowded_machine(True),
    "machine-alloc-too-large": lambda: Machine("x86_64").alloc(1 << 47),
    "smp-cpus": lambda: Machine("riscv64", cpus=0),
    "smp-no-cpu": lambda: Machine("riscv64", cpus=2).step(2),
    "smp-start-busy": smp_start_twice,
    "smp-start-args": lambda: smp_machine().start(0, SMP_CODE, *range(20)),
    "smp-no-result": lambda: Machine("riscv64", cpus=2).result(0),
    "smp-migrate-idle": lambda: Machine("riscv64", cpus=2).migrate(0, 1),
    "smp-migrate-busy": smp_migrate_to_busy,
    "poke-a64-wrong-isa": lambda: smp_machine().smp.patching.patch_text_a64(SMP_CODE, 0),
    "poke-a64-unaligned": lambda: smp_machine("aarch64").smp.patching.patch_text_a64(
        SMP_CODE + 2, 0xD503201F),
    "poke-bp-wrong-isa": lambda: smp_machine("riscv64").smp.patching.text_poke_bp(
        SMP_CODE, b"\x13\x00\x00\x00"),
    "poke-bp-twice": poke_twice,
    "elf-machine": lambda: load(lambda r: struct.pack_into("<H", r, 18, 40)),
    "elf-wrong-isa": lambda: load(lambda r: None, "aarch64"),
    "elf-dynamic": lambda: load(lambda r: _ph(r, 0, "<I", 3)),
    "elf-unreadable": lambda: load(lambda r: _sh(r, 40, "<I", 0, 2)),
    # -- inputs files ---------------------------------------------------------------------
    "inputs-int": lambda: spec(cases=[["1"]]),
    "inputs-buf": lambda: specs({"f": {"args": ["buf"], "cases": [[1]]}}),
    "inputs-hex": lambda: specs({"f": {"args": ["buf"], "cases": [[{"hex": "zz"}]]}}),
    "inputs-size": lambda: specs({"f": {"args": ["buf"], "cases": [[{"size": -1}]]}}),
    "inputs-kind": lambda: specs({"f": {"args": ["float"], "cases": [[1]]}}),
    "inputs-args": lambda: specs({"f": {"cases": []}}),
    "inputs-arg-names": lambda: specs({"f": {"args": [1], "cases": []}}),
    "inputs-cases": lambda: spec(cases=3),
    "inputs-isas": lambda: spec(isas="x86_64"),
    "inputs-callable": lambda: spec(callable="yes"),
    "inputs-note": lambda: spec(note=5),
    "inputs-too-many": lambda: specs({"f": {"args": ["int"] * 9, "cases": []}}),
    "inputs-arity": lambda: spec(cases=[[1, 2]]),
    "inputs-json": lambda: specs("{"),
    "inputs-deep": lambda: specs("[" * 100_000),
    "inputs-object": lambda: specs("[]"),
    "dwarf-unreadable": lambda: dwarf_failure(OSError(5, "Input/output error")),
    "dwarf-malformed": lambda: dwarf_failure(KeyError("DW_AT_type")),
    "audit-unknown-function": lambda: __import__("kprobe_ref.tools.audit").tools.audit.audit_image(
        bundled_image("x86_64"), "x86_64", ["no_such_function"]),
    # -- the command line -----------------------------------------------------------------
    "cli-usage": lambda: cli("audit", "--jobs", "x"),
    "cli-jobs": lambda: cli("audit", "--jobs", "0"),
    "cli-arch": lambda: cli("audit", "--arch", "mips"),
    "cli-inputs-unreadable": lambda: cli("audit", "--arch", "x86_64", "--inputs", "/nonexistent"),
    "cli-inputs-too-big": big_inputs_file,
    "cli-inputs-not-utf8": not_utf8_inputs,
    "cli-gate": lambda: cli("audit", "--arch", "x86_64", "--fail-on-reject", "nosuch"),
    "cli-kprobe-error": lambda: cli("audit", "/nonexistent/image.elf"),
    "cli-machine-error": machine_error,
    "cli-interrupt": lambda: cli_raising(KeyboardInterrupt()),
    "cli-broken-pipe": lambda: cli_raising(BrokenPipeError(32, "Broken pipe")),
    "cli-os-error": lambda: cli_raising(OSError(28, "No space left on device")),
    "cli-recursion": lambda: cli_raising(RecursionError()),
    "cli-internal": lambda: cli_raising(ZeroDivisionError("division by zero")),
    "cli-divergence": divergent_audit,
    "cli-fail-on-reject": lambda: cli("audit", "--arch", "x86_64", "--no-proofs", "--function",
                                      "x86_indirect", "--fail-on-reject",
                                      "x86_indirect"),
    "vectors-out-file": lambda: cli("vectors", "export", "--arch", "x86_64", "--out", __file__),
    "vectors-out-unwritable": lambda: cli("vectors", "export", "--arch", "x86_64", "--out",
                                          "/proc/kprobe-ref-vectors"),
    "reloc-number": lambda: cli("reloc", "--arch", "x86_64", "--bytes", "90", "--addr", "x"),
    "reloc-64-bit": lambda: cli("reloc", "--arch", "x86_64", "--bytes", "90", "--addr",
                                str(1 << 64)),
    "reloc-arch": lambda: cli("reloc", "--arch", "mips", "--bytes", "90", "--addr", "0"),
    "reloc-hex": lambda: cli("reloc", "--arch", "x86_64", "--bytes", "zz", "--addr", "0"),
    "reloc-empty": lambda: cli("reloc", "--arch", "x86_64", "--bytes", "", "--addr", "0"),
    # -- symbol names and event callbacks ------------------------------------------------
    "callback-missing": lambda: ProbeBuilder().with_event_callback(1),
    "callback-id-not-integer": lambda: ProbeBuilder().with_event_callback(
        "one", lambda regs: None),  # type: ignore[arg-type]
    "callback-not-callable": lambda: kprobe(x86(), BASE).register_event_callback(1, None),
    "symbol-and-address": lambda: register_kprobe(
        x86().manager, x86().points, ProbeBuilder().with_symbol("f").with_symbol_addr(BASE)),
    "symbol-not-a-string": lambda: register_kprobe(
        x86().manager, x86().points, ProbeBuilder().with_symbol(7)),  # type: ignore[arg-type]
    # -- kernel images --------------------------------------------------------------------
    "kernel-unreadable": lambda: kernel_elf_at("/nonexistent/vmlinux"),
    "kernel-empty": lambda: kernel_elf(b""),
    "kernel-truncated-header": lambda: kernel_elf(b"\x7fELF\x02\x01" + b"\0" * 12),
    "kernel-not-elf": lambda: kernel_elf(b"MZ" + b"\0" * 62),
    "kernel-32-bit": lambda: kernel_elf(b"\x7fELF\x01\x01" + b"\0" * 58),
    "kernel-machine": lambda: kernel_elf(kernel_file(40).read_bytes()),
    "kernel-read-outside": kernel_read_outside,
    "image-host-read": lambda: image_host(lambda h: h.read_memory(KTEXT + 8, 16, None)),
    "image-host-write": lambda: image_host(lambda h: h.write_memory(KTEXT, b"\xcc", None)),
    "image-host-writeable": lambda: image_host(
        lambda h: h.set_writeable_for_address(KTEXT, 1, None, lambda: None)),
    "image-host-alloc": lambda: image_host(lambda h: h.alloc_kernel_exec_memory(KTEXT, 64)),
    "image-host-free": lambda: image_host(lambda h: h.free_kernel_exec_memory(KTEXT)),
    "image-host-alloc-user": lambda: image_host(
        lambda h: h.alloc_user_exec_memory(1, KTEXT, 64)),
    "image-host-free-user": lambda: image_host(lambda h: h.free_user_exec_memory(1, KTEXT)),
    "image-host-read-register": lambda: image_host(lambda h: h.read_extra_register("x")),
    "image-host-write-register": lambda: image_host(
        lambda h: h.write_extra_register("x", 0)),
    "image-host-task": lambda: image_host(
        lambda h: h.insert_kretprobe_instance_to_task(None)),
    # -- trace ----------------------------------------------------------------------------
    "trace-call-syntax": lambda: cli("trace", "--call", "gcd(1,,)"),
    "trace-call-not-unique": trace_call_not_unique,
    "trace-file-offset-unreadable": lambda: file_to_vaddr("/nonexistent/image.elf", 0),
    "trace-file-offset-outside": lambda: file_to_vaddr(
        str(bundled_image("x86_64", "user")), 0x7FFF_FFFF),
    # -- sweep ----------------------------------------------------------------------------
    "sweep-width": lambda: cli("sweep", "--arch", "aarch64", "--width", "16"),
    "sweep-workers": lambda: cli("sweep", "--arch", "aarch64", "--workers", "0"),
    "sweep-vendor": lambda: cli("sweep", "--arch", "aarch64", "--vendor"),
    "sweep-scheduler": sweep_without_scheduler,
    # -- reloc ----------------------------------------------------------------------------
    "reloc-partial": reloc_length_past_the_bytes,
    "reloc-counterexample": reloc_counterexample,
}


def _rows_by_example() -> dict[str, Row]:
    out = {}
    for row in read_rows():
        m = re.fullmatch(re.escape(THIS) + r"\[(.+)\]", row.test)
        if m is not None:
            out[m.group(1)] = row
    return out


def _template_regex(message: str) -> re.Pattern[str]:
    parts = FIELD.split(" ".join(message.split()))
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


def test_every_site_has_a_row() -> None:
    rows = read_rows()
    missing = [s for s in find_sites() if not any(s.matches(r) for r in rows)]
    assert not missing, (
        f"{len(missing)} site(s) raising a bad-input error or ending the command have no row "
        f"in {CATALOGUE.relative_to(CATALOGUE.parent.parent)}; add one per site (then name a "
        "test in the last column, or add an example to tests/test_error_catalogue.py):\n"
        + "\n".join(f"  {s.file}:{s.line} ({s.where}, {s.error}):\n    {s.suggestion()}"
                    for s in missing))


def test_every_row_covers_a_site_and_names_a_test() -> None:
    sites = find_sites()
    problems = []
    for row in read_rows():
        if not any(s.matches(row) for s in sites):
            problems.append(f"line {row.line}: no site in {row.where} raises {row.errors} "
                            f"with message {row.message!r} (stale row?)")
        why = missing_test(row.test)
        if why is not None:
            problems.append(f"line {row.line}: {why}")
    assert not problems, "\n".join(problems)


def test_every_example_has_a_row() -> None:
    assert set(EXAMPLES) == set(_rows_by_example())


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_bad_input_example(example: str) -> None:
    row = _rows_by_example()[example]
    pattern = _template_regex(row.message)
    exits = [e for e in row.errors if e.startswith("exit ")]
    if exits:
        status, err = EXAMPLES[example]()  # type: ignore[misc]
        assert f"exit {status}" in exits, (status, err)
        lines = err.splitlines()
        if status == 2 or row.message != "-":
            assert len(lines) == 1 and lines[0].startswith("kprobe-ref: "), err
            assert pattern.search(lines[0]), (row.message, lines[0])
        assert "Traceback" not in err
        return
    with pytest.raises(Exception) as info:
        EXAMPLES[example]()
    assert type(info.value).__name__ in row.errors or any(
        c.__name__ in row.errors for c in type(info.value).__mro__), (row.errors, info.value)
    assert pattern.search(str(info.value)), (row.message, str(info.value))
