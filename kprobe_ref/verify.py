"""The import path ``kprobe_ref.verify`` of earlier releases.

Verification lives in :mod:`kprobe_ref.tools.verify` and the bundled images in
:mod:`kprobe_ref.corpus`; this module re-exports their public names so that
``from kprobe_ref.verify import bundled_image`` keeps working.
"""

from __future__ import annotations

from kprobe_ref.corpus import bundled_image
from kprobe_ref.tools.verify import (
    Case,
    FunctionSpec,
    Outcome,
    Runner,
    SiteResult,
    bundled_specs,
    load_specs,
)

__all__ = [
    "Case",
    "FunctionSpec",
    "Outcome",
    "Runner",
    "SiteResult",
    "bundled_image",
    "bundled_specs",
    "load_specs",
]
