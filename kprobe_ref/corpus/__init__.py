"""The bundled corpus: small C functions built for every ISA, as kernel and user images.

``functions.json`` describes each function's inputs; ``manifest.json`` pins the toolchain
and every image's hash; ``src/`` holds the sources and the linker scripts sit beside them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["bundled_image", "corpus_dir"]


def corpus_dir() -> Path:
    """The directory holding the bundled corpus."""
    return Path(str(resources.files("kprobe_ref") / "corpus"))


def bundled_image(isa: str, kind: str = "kernel") -> Path:
    """The path of a bundled corpus image (``kind`` is ``kernel`` or ``user``)."""
    return corpus_dir() / isa / f"{kind}.elf"
