"""The conformance vector record: one JSON object per line, versioned.

``docs/conformance.md`` is the specification of the format; this module builds and checks
records.  Every 64-bit quantity (addresses, register values) is a ``"0x..."`` string, so
no JSON reader loses precision above 2**53; byte strings are lowercase hex.

A record of ``kind`` ``"kprobe"`` has ``schema``, ``id``, ``isa``, ``row``, ``case``,
``bytes``, ``addr``, ``user``, ``verdict`` and ``reason``; one that is not rejected also has
``pre`` and ``post`` (each ``{"regs", "flags", "extra", "mem"}``) and, when stepped,
``slot_addr``, ``slot_bytes``, ``slot_break_offset``, ``resume_addr`` and optionally
``slot_scratch``.  A record may carry ``context``: the bytes of its function before the
instruction.  A record of ``kind`` ``"kretprobe"`` has ``bytes`` (the whole function),
``addr`` (its entry), ``pre`` (the entry state), ``hijack`` (what the entry probe changes)
and ``post`` (the state at the real return address after the trampoline).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "State", "hexint", "parse_record", "state_json", "to_line"]

SCHEMA_VERSION = 1
"""Bumped whenever a field changes meaning or a required field is added."""

_KPROBE_KEYS = ("schema", "kind", "id", "isa", "row", "case", "bytes", "addr", "user",
                "verdict", "reason")
_STATE_KEYS = ("regs", "flags", "extra", "mem")
_VERDICTS = ("reject", "simulate", "step")


def hexint(value: int) -> str:
    """A 64-bit quantity as a vector writes it."""
    return f"{value & ((1 << 64) - 1):#x}"


@dataclass
class State:
    """Architectural state as a vector holds it: ``pt_regs`` registers, condition flags,
    state outside ``pt_regs`` and memory regions ``(address, bytes)``."""

    regs: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    mem: list[tuple[int, bytes]] = field(default_factory=list)


def state_json(s: State) -> dict[str, Any]:
    """The JSON form of a state."""
    return {
        "regs": {k: hexint(v) for k, v in s.regs.items()},
        "flags": {k: hexint(v) for k, v in s.flags.items()},
        "extra": {k: f"{v:#x}" for k, v in s.extra.items()},
        "mem": [[hexint(a), data.hex()] for a, data in s.mem],
    }


def to_line(record: Mapping[str, Any]) -> str:
    """One JSON Lines line (keys in insertion order, no spaces)."""
    return json.dumps(record, separators=(",", ":"))


def _int(value: Any, where: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{where}: expected a \"0x...\" string, got {value!r}")
    return int(value, 16)


def _state(raw: Any, where: str) -> State:
    if not isinstance(raw, dict) or any(k not in raw for k in _STATE_KEYS):
        raise ValueError(f"{where}: expected an object with {', '.join(_STATE_KEYS)}")
    regions = []
    for i, region in enumerate(raw["mem"]):
        if not isinstance(region, list) or len(region) != 2:
            raise ValueError(f"{where}.mem[{i}]: expected [addr, hex]")
        regions.append((_int(region[0], f"{where}.mem[{i}]"), bytes.fromhex(region[1])))
    return State(
        {k: _int(v, f"{where}.regs.{k}") for k, v in raw["regs"].items()},
        {k: _int(v, f"{where}.flags.{k}") for k, v in raw["flags"].items()},
        {k: _int(v, f"{where}.extra.{k}") for k, v in raw["extra"].items()},
        regions,
    )


def parse_record(line: str) -> dict[str, Any]:
    """Parse and check one line; ``pre``/``post``/``hijack`` become :class:`State` and
    addresses integers.  Raises ``ValueError`` naming what is wrong."""
    rec = json.loads(line)
    if not isinstance(rec, dict):
        raise ValueError("a vector is a JSON object")
    if rec.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"schema {rec.get('schema')!r}, this reader knows {SCHEMA_VERSION}")
    missing = [k for k in _KPROBE_KEYS if k not in rec]
    if missing:
        raise ValueError(f"{rec.get('id', '?')}: missing {', '.join(missing)}")
    where = str(rec["id"])
    if rec["verdict"] not in _VERDICTS:
        raise ValueError(f"{where}: unknown verdict {rec['verdict']!r}")
    rec["addr"] = _int(rec["addr"], f"{where}.addr")
    rec["bytes"] = bytes.fromhex(rec["bytes"])
    for key in ("pre", "post", "hijack"):
        if key in rec:
            rec[key] = _state(rec[key], f"{where}.{key}")
    needs_state = rec["kind"] == "kretprobe" or rec["verdict"] != "reject"
    if needs_state and ("pre" not in rec or "post" not in rec):
        raise ValueError(f"{where}: a {rec['verdict']} vector needs pre and post")
    if rec["kind"] == "kprobe" and rec["verdict"] == "step":
        for key in ("slot_addr", "resume_addr"):
            rec[key] = _int(rec.get(key), f"{where}.{key}")
        rec["slot_bytes"] = bytes.fromhex(rec["slot_bytes"])
    return rec


def read_records(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Parse every non-empty line."""
    return [parse_record(line) for line in lines if line.strip()]
