"""Proof outcomes cached by the ISA's rule tables, so a large audit does not rerun proofs.

The key is a SHA-256 digest of everything an outcome depends on: the source of the ISA
package (its decode table, simulation and slot rules), of the ISA's Z3 model, of the proof
obligations (``kprobe_ref/proofs``) and of the bit-vector layer.  Change any rule and the
key changes, so a stale outcome is never read.  The cache lives in ``$KPROBE_REF_CACHE``, or
else ``$XDG_CACHE_HOME/kprobe-ref`` (``~/.cache/kprobe-ref``); a cache that cannot be read
or written is ignored (the proofs run).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kprobe_ref.proofs.status import Outcomes, ProofStatus

__all__ = ["cache_dir", "cached_status", "rule_digest"]

_ROOT = Path(__file__).absolute().parent.parent


def rule_digest(isa: str) -> str:
    """The digest of the sources the proof outcomes of ``isa`` depend on."""
    h = hashlib.sha256(isa.encode())
    files = sorted((_ROOT / "arch" / isa).glob("*.py"))
    files += [_ROOT / "arch" / "base.py", _ROOT / "bits.py", _ROOT / "reasons.py"]
    files += sorted((_ROOT / "proofs").glob("*.py"))
    files += [p for p in (_ROOT / "models" / f"{isa}.py", _ROOT / "models" / "state.py")
              if p.exists()]
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    """Where cached outcomes live."""
    env = os.environ.get("KPROBE_REF_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kprobe-ref"


def cached_status(isa: str, jobs: int | None = None) -> tuple[ProofStatus, bool]:
    """The proof status of ``isa``, and whether it came from the cache (else the
    obligations ran now and the outcome was stored)."""
    path = cache_dir() / f"proofs-{isa}-{rule_digest(isa)[:32]}.json"
    try:
        raw = json.loads(path.read_text())
        outcomes: Outcomes = {(k, c): [bool(x) for x in v] for k, c, v in raw["outcomes"]}
        return ProofStatus(isa, outcomes=outcomes), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    status = ProofStatus(isa, jobs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"isa": isa, "outcomes": [
            [k, c, v] for (k, c), v in sorted(status.outcomes.items())]}))
        tmp.replace(path)
    except OSError:
        pass
    return status, False
