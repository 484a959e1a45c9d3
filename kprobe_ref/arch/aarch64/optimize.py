"""aarch64 jump-optimized probes: none.

Linux v6.12 does not select ``HAVE_OPTPROBES`` on this ISA, so every kprobe stays a
breakpoint (with a boosted slot where one exists, ``docs/boost.md``).  The generic
optimizer (``kprobe_ref/optimize.py``) asks every ISA the same two questions; here the
answer is always the reason code ``no-jump-optimization``.
A jump to a detour buffer would be ``B`` (+-128 MiB) and a detour farther away would
need a scratch register for ``ADRP``+``BR``; neither is done here.
"""

from __future__ import annotations

from kprobe_ref.arch.base import OptPlan, OptRegion, Reader

__all__ = ["REFUSAL", "build_detour", "plan_region"]

REFUSAL = "no-jump-optimization"


def plan_region(code: bytes, start: int, addr: int, mem: Reader | None = None
                ) -> OptRegion | str:
    """The region a jump at ``addr`` would replace: never, on this ISA."""
    return REFUSAL


def build_detour(region: OptRegion, addr: int, detour: int) -> OptPlan | str:
    """The detour of an optimized probe: never, on this ISA."""
    return REFUSAL
