"""The bundled corpus: small C functions built for every ISA, as kernel and user images.

``functions.json`` describes each function's inputs; ``manifest.json`` pins the toolchain
and every image's hash; ``src/`` holds the sources and the linker scripts sit beside them.
``vmlinux/`` holds the kernel-shaped images (:func:`kernel_image`) with a manifest of its own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["bundled_image", "corpus_dir", "kernel_image"]


def corpus_dir() -> Path:
    """The directory holding the bundled corpus."""
    return Path(str(resources.files("kprobe_ref") / "corpus"))


def bundled_image(isa: str, kind: str = "kernel") -> Path:
    """The path of a bundled corpus image (``kind`` is ``kernel`` or ``user``)."""
    return corpus_dir() / isa / f"{kind}.elf"


def kernel_image(isa: str, kind: str = "vmlinux") -> Path:
    """The path of a kernel-shaped test image: ``kind`` is ``vmlinux`` (``ET_EXEC``) or
    ``vmlinux-pie`` (``ET_DYN``, ``R_*_RELATIVE`` relocations unapplied in the file)."""
    return corpus_dir() / "vmlinux" / isa / f"{kind}.elf"
