"""Project-wide contracts: the public names, the ISA packages' shared module layout, and the
generated documents matching the decode tables."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import kprobe_ref
from kprobe_ref import arch
from kprobe_ref.arch import ARCHES
from kprobe_ref.tools.docgen import documents

ROOT = Path(__file__).parents[1]
CONTRACT = [
    "ProbeBuilder", "KretprobeBuilder", "ProbeManager", "ProbePointList", "PtRegs", "ProbeData",
    "KprobeAuxiliaryOps", "register_kprobe", "unregister_kprobe", "register_kretprobe",
    "unregister_kretprobe", "register_uprobe", "unregister_uprobe", "register_uretprobe",
    "unregister_uretprobe", "kprobe_handler_from_break", "kprobe_handler_from_debug",
    "uprobe_handler_from_break", "uprobe_handler_from_debug", "KprobeError",
    "UnsupportedInstruction", "InvalidAddress", "NotRegistered",
]
MACHINE_METHODS = [
    "load_elf", "add_symbol", "alloc", "write", "read", "call", "run", "regs", "set_regs",
    "map", "spawn", "call_user", "process",
]


def test_the_design_contract_names_import() -> None:
    missing = [n for n in CONTRACT if not hasattr(kprobe_ref, n)]
    assert not missing
    from kprobe_ref.sim import GuestFault, Machine, MachineError, StepLimitExceeded

    assert issubclass(GuestFault, MachineError) and issubclass(StepLimitExceeded, MachineError)
    assert all(callable(getattr(Machine, n)) for n in MACHINE_METHODS)
    m = Machine("x86_64")
    assert m.manager is not None and m.points is not None and m.trap_count == 0


def _modules(isa: str) -> set[str]:
    pkg = importlib.import_module(f"kprobe_ref.arch.{isa}")
    return {m.name for m in pkgutil.iter_modules(pkg.__path__)}


def test_every_isa_package_has_the_same_modules() -> None:
    expected = {"encoding", "decode", "simulate", "slot", "rethook", "regs", "kernel",
                "optimize"}
    packages = [m.name for m in pkgutil.iter_modules(arch.__path__) if m.ispkg]
    assert set(packages) >= set(ARCHES)
    for isa in packages:
        assert _modules(isa) == expected, isa


@pytest.mark.parametrize("rel", sorted(documents()))
def test_generated_documents_are_current(rel: str) -> None:
    text = documents()[rel]
    hint = f"run python -m kprobe_ref.tools.docgen to update {rel}"
    assert (ROOT / rel).read_text() == text, hint


def test_every_rejected_class_in_the_docs_has_a_reason_code() -> None:
    from kprobe_ref.reasons import REASONS

    for isa in ARCHES:
        rows = importlib.import_module(f"kprobe_ref.arch.{isa}.decode").doc_rows()
        assert all(r[3] in REASONS for r in rows), isa


CLASS_STEM = {"x86_64": "X86_64", "aarch64": "Aarch64", "riscv64": "Riscv64",
              "loongarch64": "LoongArch64"}


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_every_isa_package_names_its_roles_alike(isa: str) -> None:
    ops = importlib.import_module(f"kprobe_ref.arch.{isa}")
    encoding = importlib.import_module(f"kprobe_ref.arch.{isa}.encoding")
    slot = importlib.import_module(f"kprobe_ref.arch.{isa}.slot")
    assert type(ops.OPS).__name__ == f"{CLASS_STEM[isa]}Ops"
    assert ops.OPS.regs_class.__name__ == f"{CLASS_STEM[isa]}PtRegs"
    assert ops.OPS.slot_size == slot.SLOT_SIZE
    assert ops.OPS.breakpoint(ops.OPS.decode(b"\x90" * 16, 0x1000, False), True) in (
        encoding.BREAK_UPROBE, getattr(encoding, "BREAK_KPROBE_16", None))
    assert ops.OPS.step_breakpoint(False) == encoding.BREAK_STEP
    assert encoding.BREAK_KPROBE and encoding.BREAK_UPROBE
