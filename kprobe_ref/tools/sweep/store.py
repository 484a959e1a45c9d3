"""Checkpoints: one JSON line per finished shard in ``<results>/<isa>/shards.jsonl``.

The driver appends a shard's record as soon as it arrives and flushes it to disk, so an
interrupted sweep loses only the shards in flight.  Reading skips a torn last line and any
record made with another decode table (its ``table`` fingerprint differs) or another version
of pypcode or capstone; the newest record of a shard wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["Store"]


class Store:
    """The checkpoint file of one ISA under a results directory."""

    def __init__(self, root: str | os.PathLike[str], isa: str) -> None:
        self.path = Path(root) / isa / "shards.jsonl"

    def load(self, table: str, versions: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Records by shard name, made with this table and these tool versions."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("table") == table and rec.get("versions") == versions:
                out[rec["shard"]] = rec
        return out

    def append(self, rec: dict[str, Any]) -> None:
        """Add one shard's record, durably (on a line of its own, after a torn last line
        if an earlier run was stopped mid-write)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        with self.path.open("a") as f:
            f.write(("\n" if torn else "") + json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
