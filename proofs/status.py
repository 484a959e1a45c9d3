"""Which rules are proved: the link from an instruction's verdict to the obligations.

An instruction's rule counts as *proved* when at least one obligation speaks for it and every
such obligation is proved:

- a simulated class ``K``: its ``simulate`` and ``decode-model`` obligations;
- an x86_64 RIP-relative instruction: the ``relocate`` and ``slot`` obligations of
  ``rip_relative``;
- any other stepped instruction: the ``slot`` obligation ``copy`` and, on the fixed-width
  ISAs, every ``decode-pc`` obligation (no stepped word reads or writes the PC);
- a rejected instruction has no rule to prove (``None``).
"""

from __future__ import annotations

from kprobe_ref.proofs.core import Obligation
from kprobe_ref.proofs.runner import all_obligations, run

__all__ = ["ProofStatus"]

Outcomes = dict[tuple[str, str], list[bool]]
"""(obligation kind, class) -> whether each of its obligations is proved."""


class ProofStatus:
    """The results of an ISA's obligations, and the verdict-to-obligation link."""

    def __init__(self, isa: str, jobs: int | None = None, outcomes: Outcomes | None = None
                 ) -> None:
        """Run the obligations of ``isa`` (or take their ``outcomes``, from a cache)."""
        self.isa = isa
        self.outcomes: Outcomes = outcomes if outcomes is not None else _run(isa, jobs)

    def _all(self, keys: list[tuple[str, str]]) -> bool:
        found = [r for k in keys for r in self.outcomes.get(k, [])]
        return bool(found) and all(found)

    def rule(self, verdict: str, klass: str) -> bool | None:
        """Whether the rule handling an instruction of this verdict and class is proved."""
        if verdict == "reject":
            return None
        if verdict == "simulate":
            return self._all([("simulate", klass), ("decode-model", klass)])
        if klass == "rip_relative":
            return self._all([("relocate", "rip_relative"), ("slot", "rip_relative")])
        pc = [k for k in self.outcomes if k[0] == "decode-pc"]
        return self._all([("slot", "copy"), *pc])


def _base(ob: Obligation) -> str:
    """The class an obligation is about (``call_ind_mem#2`` -> ``call_ind_mem``)."""
    return ob.klass.split("#", 1)[0]


def _run(isa: str, jobs: int | None) -> Outcomes:
    obligations = [o for o in all_obligations(isa) if o.kind not in
                   ("trampoline", "entry-hijack", "instance-stack")]
    out: Outcomes = {}
    for ob, res in zip(obligations, run(obligations, jobs), strict=True):
        out.setdefault((ob.kind, _base(ob)), []).append(res.proved)
    return out
