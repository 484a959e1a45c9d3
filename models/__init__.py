"""Z3 models of the instruction classes kprobe-ref simulates or relocates.

One module per ISA, written from the architecture manuals and independently of
``kprobe_ref.arch``: each class has its encoding predicate over symbolic fields and its
semantics over a symbolic instruction address, registers, flags and memory.  Installed as
``kprobe_ref.models``.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["MODULES", "model"]

MODULES: dict[str, str] = {
    "x86_64": "kprobe_ref.models.x86_64",
    "aarch64": "kprobe_ref.models.aarch64",
    "riscv64": "kprobe_ref.models.riscv64",
    "loongarch64": "kprobe_ref.models.loongarch64",
}
"""ISA -> its model module (one line per ISA)."""


def model(isa: str) -> ModuleType:
    """The model module of ``isa``."""
    return import_module(MODULES[isa])
