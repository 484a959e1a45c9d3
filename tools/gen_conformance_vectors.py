"""Regenerate the committed conformance vectors: ``tests/vectors/conformance/<isa>.jsonl``.

Runs ``kprobe-ref vectors export`` for every ISA (each vector checked on the machine, probed
and unprobed) and writes ``tests/vectors/conformance/manifest.json``: the schema version,
the command, and each file's record count and sha256.  The export is deterministic, so a
rerun on an unchanged tree rewrites identical files.

Usage: ``python tools/gen_conformance_vectors.py``
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kprobe_ref.arch import ARCHES
from kprobe_ref.tools.conformance import SCHEMA_VERSION
from kprobe_ref.tools.conformance.export import export, report

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "conformance"


def main() -> int:
    files = {}
    for isa in sorted(ARCHES):
        path, cov = export(isa, OUT)
        print("\n".join(report(isa, cov)))
        data = path.read_bytes()
        files[path.name] = {"records": data.count(b"\n"),
                            "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "schema": SCHEMA_VERSION,
        "generator": "tools/gen_conformance_vectors.py "
                     "(kprobe-ref vectors export --arch ISA --out tests/vectors/conformance)",
        "source": "kprobe_ref's own decode tables, simulation rules and slot builders, each "
                  "vector checked on kprobe_ref.sim.Machine probed and unprobed",
        "files": files,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
