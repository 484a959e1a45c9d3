"""``kprobe-ref audit``: code it has never seen (compiled here with ziglang for each ISA),
inputs from a file and drawn from DWARF signatures, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kprobe_ref.arch import ARCHES
from kprobe_ref.tools.audit import audit_image, integer_only_functions, summarize
from kprobe_ref.tools.cli import main
from kprobe_ref.tools.verify import bundled_image, load_specs

SOURCE = r"""
typedef unsigned long u64;
typedef unsigned char u8;
static u64 table[8] = {3, 1, 4, 1, 5, 9, 2, 6};

u64 mix(u64 a, u64 b) {
    u64 r = 0;
    for (int i = 0; i < (int)(b & 7); i++)
        r = (r << 5) ^ (r >> 3) ^ (a + table[i]);
    return r ^ (a > b ? a - b : b - a);
}

long pick(long x) {
    switch (x & 7) {
    case 0: return x * 3;
    case 1: return x - 17;
    case 2: return x ^ 0x55;
    case 3: return -x;
    case 4: return x << 2;
    case 5: return x / 3;
    default: return 42;
    }
}

u64 sum_bytes(const u8 *p, u64 n) {
    u64 s = 0;
    for (u64 i = 0; i < (n & 63); i++)
        s += p[i] * (i + 1);
    return s;
}

void scale(int *v, long n, int k) {
    for (long i = 0; i < (n & 15); i++)
        v[i] *= k;
}
"""
CORPUS = Path(__file__).parents[1] / "kprobe_ref" / "corpus"
INPUTS = {
    "sum_bytes": {"args": ["buf", "int"],
                  "cases": [[{"hex": "0102030405ff"}, 6], [{"hex": ""}, 0]]},
    "scale": {"args": ["buf", "int", "int"],
              "cases": [[{"hex": "01000000feffffff07000000"}, 3, -2]]},
    "mix": {"args": ["int", "int"], "cases": [[1, 2], [-1, 7], [12345, 3]]},
}


def build(isa: str, tmp: Path, debug: bool) -> Path:
    src = tmp / "t.c"
    src.write_text(SOURCE)
    out = tmp / f"t-{isa}{'-g' if debug else ''}.elf"
    flags = ["-g"] if debug else ["-g0"]
    extra = {"x86_64": ["-mno-red-zone", "-mcmodel=kernel"], "riscv64": ["-mcmodel=medany"],
             "loongarch64": ["-mno-lsx"]}.get(isa, [])
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", f"{isa}-freestanding-none", "-O2",
           "-ffreestanding", "-fno-builtin", "-fno-pic", "-static", "-nostdlib",
           "-fno-vectorize", "-fno-slp-vectorize", *flags, *extra, "-Wl,--entry=mix",
           "-T", f"link-{isa}.ld", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=CORPUS)  # the script INCLUDEs link.ld
    return out


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_audit_of_freshly_compiled_code_with_inputs_from_a_file(isa: str, tmp_path: Path) -> None:
    image = build(isa, tmp_path, debug=False)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(INPUTS))
    found, reports = audit_image(image, isa, specs=load_specs(inputs.read_text()), jobs=1)
    assert found == isa
    s = summarize(reports)
    assert s["divergent"] == 0, [d for f in reports for i in f.instructions for d in i.divergences]
    by_name = {f.name: f for f in reports}
    assert {"mix", "pick", "sum_bytes", "scale"} <= set(by_name)
    for name in INPUTS:
        assert by_name[name].inputs == "file"
        assert all(i.verified == "ok" for i in by_name[name].instructions
                   if i.verdict != "reject")
    assert by_name["pick"].inputs == "none"  # no inputs, no DWARF: static verdicts only


@pytest.mark.parametrize("isa", [i for i in ("x86_64", "riscv64") if i in ARCHES])
def test_integer_only_functions_get_drawn_inputs_from_dwarf(isa: str, tmp_path: Path) -> None:
    image = build(isa, tmp_path, debug=True)
    ints = integer_only_functions(image)
    assert ints.get("mix") == 2 and ints.get("pick") == 1
    assert "sum_bytes" not in ints and "scale" not in ints
    _, reports = audit_image(image, isa, functions=["pick"], jobs=1)
    assert reports[0].inputs == "drawn" and reports[0].cases > 0
    assert summarize(reports)["divergent"] == 0


def test_cli_json_on_one_bundled_function(capsys: pytest.CaptureFixture[str]) -> None:
    inputs = Path(bundled_image("x86_64")).parents[1] / "functions.json"
    args = ["audit", str(bundled_image("x86_64")), "--function", "gcd", "--json",
            "--inputs", str(inputs)]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["isa"] == "x86_64" and doc["summary"]["divergent"] == 0
    gcd = doc["functions"][0]
    assert gcd["name"] == "gcd" and gcd["inputs"] == "file"
    assert all(i["proved"] is True and i["verified"] == "ok" for i in gcd["instructions"])


def test_fail_on_reject(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["audit", str(bundled_image("x86_64")), "--function", "x86_indirect", "--no-proofs"]
    assert main([*args, "--fail-on-reject", "x86_indirect"]) == 1
    assert "cannot be probed" in capsys.readouterr().err
    assert main(args) == 0


@pytest.mark.parametrize("make", ["missing", "not-elf", "wrong-isa", "unknown-function",
                                  "bad-json", "bad-arity", "bad-hex", "bad-kind"])
def test_bad_input_is_one_line_and_status_2(make: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = str(bundled_image("x86_64"))
    bad = tmp_path / "inputs.json"
    args = {
        "missing": ["audit", str(tmp_path / "nope.elf")],
        "not-elf": ["audit", __file__],
        "wrong-isa": ["audit", image, "--arch", "riscv64"],
        "unknown-function": ["audit", image, "--function", "no_such_function"],
    }.get(make)
    if args is None:
        bad.write_text({
            "bad-json": "{not json",
            "bad-arity": json.dumps({"gcd": {"args": ["int", "int"], "cases": [[1]]}}),
            "bad-hex": json.dumps({"gcd": {"args": ["buf"], "cases": [[{"hex": "zz"}]]}}),
            "bad-kind": json.dumps({"gcd": {"args": ["float"], "cases": [[1.5]]}}),
        }[make])
        args = ["audit", image, "--function", "gcd", "--inputs", str(bad)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kprobe-ref: ") and "Traceback" not in err
