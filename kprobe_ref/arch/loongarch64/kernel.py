"""What a loongarch64 Linux image adds to the kprobe blacklist, and how its loader relocates.

Mirrors ``arch_populate_kprobe_blacklist`` of Linux v6.12
``arch/loongarch/kernel/kprobes.c``: the areas between the linker symbols ``<prefix>_start`` and
``<prefix>_end`` listed here are blacklisted symbol by symbol, after the generic ones
(``NOKPROBE_SYMBOL``, ``__kprobes_text``, ``__noinstr_text``).
"""

from __future__ import annotations

__all__ = ["BLACKLIST_AREAS", "RELATIVE_RELOCATION"]

BLACKLIST_AREAS: tuple[tuple[str, str], ...] = (
    ("__irqentry_text", "irqentry-text"),
)
"""(linker symbol prefix, blacklist cause), in the order Linux adds them."""

RELATIVE_RELOCATION = 3
"""The ELF relocation type ``R_*_RELATIVE``: the word at ``r_offset`` becomes
``r_addend`` (plus the load offset, zero before KASLR)."""
