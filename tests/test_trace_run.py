"""``kprobe-ref trace`` on all four ISAs: kprobes, kretprobes, uprobes and uretprobes, every
fetch-argument form, command-line order, the profile and the JSON output."""

from __future__ import annotations

import json
import re

import pytest

from kprobe_ref.tools.cli import main
from kprobe_ref.tools.verify import bundled_image

ISAS = ["x86_64", "aarch64", "riscv64", "loongarch64"]
REGS = {  # first argument, second argument, PC, stack pointer: the kernel's names
    "x86_64": ("di", "si", "ip", "sp"),
    "aarch64": ("x0", "x1", "pc", "sp"),
    "riscv64": ("a0", "a1", "epc", "sp"),
    "loongarch64": ("r4", "r5", "csr_era", "r3"),
}
HEAP = 0x2000_0000  # where the machine puts the first string argument
LINE = re.compile(r"^ {0,16}(\S+)-(\d+) +\[(\d{3})\] (.{5}) +(\d+)\.(\d{6}): (\w+): \((.*?)\)(.*)$")


def trace(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = main(["trace", *argv])
    out = capsys.readouterr()
    return status, out.out.splitlines(), out.err


def events(lines: list[str]) -> list[tuple[str, str, str, dict[str, str]]]:
    """(task, event, site, args) of each event line."""
    found = []
    for line in lines:
        m = LINE.match(line)
        if m is None:
            continue
        args = dict(re.findall(r" (\w+)=(\{.*?\}|\".*?\"|'.'|\S+)", m[9]))
        found.append((m[1], m[7], m[8], args))
    return found


@pytest.mark.parametrize("isa", ISAS)
def test_kprobe_and_kretprobe_fetch_every_form(capsys: pytest.CaptureFixture[str],
                                               isa: str) -> None:
    a0, _a1, pc, sp = REGS[isa]
    status, lines, err = trace(
        capsys, "--arch", isa,
        "-e", f"p:s hand_strlen s=+0(%{a0}):string c=+1(%{a0}):char u=+0(%{a0}):u8[4] "
              f"b=+0(%{a0}):b4@4/8 sp=$stack cm=$comm i=\\7 neg=\\-3:s8 a=$arg1 "
              f"ip=%{pc}:symbol im=\\\"hi\":string x=%{a0}",
        "-e", f"p:m hand_strlen+4 g=@{HEAP:#x}:string arr=@{HEAP:#x}:x8[6] "
              f"w=@{HEAP:#x}:u16 st=$stack0:x8 sy=@hand_strlen+0:x8 z=-1(+1(%{sp})):u8",
        "-e", "r3:ret hand_strlen v=$retval:s32 a=$arg1 r=$retval:u8",
        "--call", 'hand_strlen("hello")',
    )
    assert status == 0, err
    got = {e[1]: e for e in events(lines)}
    task, _, site, s = got["s"]
    assert task == "main" and site.startswith("hand_strlen+0x0/0x")
    assert (s["s"], s["c"], s["u"], s["b"]) == ('"hello"', "'e'", "{104,101,108,108}", "6")
    assert (s["cm"], s["i"], s["neg"], s["im"]) == ('"main"', "0x7", "-3", '"hi"')
    assert s["a"] == s["x"] == f"{HEAP:#x}"
    assert s["ip"].startswith("hand_strlen+0x") and int(s["sp"], 16) > 0
    m = got["m"][3]
    assert got["m"][2].startswith("hand_strlen+0x4/0x")
    assert (m["g"], m["arr"], m["w"]) == ('"hello"', "{0x68,0x65,0x6c,0x6c,0x6f,0x0}",
                                          str(0x6568))
    r = got["ret"]
    assert r[2].endswith("<- hand_strlen")
    assert (r[3]["v"], r[3]["a"], r[3]["r"]) == ("5", f"{HEAP:#x}", "5")
    assert "# call hand_strlen(\"hello\") returned 0x5" in lines


@pytest.mark.parametrize("isa", ISAS)
def test_uprobe_and_uretprobe_in_a_spawned_process(capsys: pytest.CaptureFixture[str],
                                                   isa: str) -> None:
    from kprobe_ref.sim.elf import read_image
    from kprobe_ref.tools.trace.session import _file_to_vaddr

    user = str(bundled_image(isa, "user"))
    image = read_image(user, isa)
    func = image.symbols["hand_strlen"]
    text = next(s for s in image.segments if "x" in s.perms)
    offset = func - text.vaddr + 0x1000  # the text segment's file offset in these images
    assert _file_to_vaddr(user, offset) == func
    a0 = REGS[isa][0]
    status, lines, err = trace(
        capsys, "--arch", isa,
        "-e", f"p:us {user}:{offset:#x} s=+0(%{a0}):string u=+0(%{a0}):ustring c=$comm "
              f"f=@+0x1000:u8 st=$stack0 sp=$stack",
        "-e", f"r:ur {user}:{offset:#x} ret=$retval",
        "--call", f'{user}:hand_strlen("hey")',
        "-e", "-:ur",
        "--call", f'{user}:hand_strlen("abcd")',
    )
    assert status == 0, err
    ev = events(lines)
    assert [e[1] for e in ev] == ["us", "ur", "us"]
    assert all(e[0] == "user.elf" for e in ev)
    assert ev[0][2] == f"{func:#x}" and ev[1][2] == f"0x1000 <- {func:#x}"
    assert (ev[0][3]["s"], ev[0][3]["u"], ev[0][3]["c"]) == ('"hey"', '"hey"', '"user.elf"')
    assert ev[2][3]["s"] == '"abcd"' and ev[1][3]["ret"] == "0x3"
    assert int(ev[0][3]["f"]) == text.data[0]  # @+0x1000: the text segment's first byte
    assert any(line.strip().startswith(f"{user} us") and line.split()[-1] == "2"
               for line in lines)


@pytest.mark.parametrize("isa", ISAS)
def test_deleting_an_event_between_calls(capsys: pytest.CaptureFixture[str], isa: str) -> None:
    status, lines, err = trace(
        capsys, "--arch", isa, "-e", "p:g gcd", "-e", "r:gr gcd $retval",
        "--call", "gcd(48, 18)", "-e", "-:g", "--call", "gcd(10, 4)",
    )
    assert status == 0, err
    assert [e[1] for e in events(lines)] == ["g", "gr", "gr"]
    profile = lines[lines.index("# kprobe_profile: event, hits, misses") + 1:]
    assert [p.split() for p in profile] == [["gr", "2", "0"], ["g", "1", "0"]]


def test_return_probe_misses_when_the_pool_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, err = trace(capsys, "-e", "p:calls fibonacci", "-e", "r1:ret fibonacci",
                               "--call", "fibonacci(6)")
    assert status == 0, err
    rows = {p.split()[0]: p.split()[1:] for p in lines if p.startswith("  ")}
    calls, (hits, misses) = int(rows["calls"][0]), map(int, rows["ret"])
    assert calls > 1 and hits == 1 and misses == calls - 1


def test_timestamps_are_instruction_counts_and_deterministic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ("-e", "p:f hanoi_moves", "--call", "hanoi_moves(5)", "--json")
    runs = [trace(capsys, *argv)[1] for _ in range(2)]
    assert runs[0] == runs[1]
    objs = [json.loads(x) for x in runs[0]]
    stamps = [o["timestamp_ns"] for o in objs if o["type"] == "event"]
    assert len(stamps) == 6 and stamps == sorted(stamps) and stamps[-1] > stamps[0]
    assert objs[0]["args"] == {} and objs[0]["kind"] == "kprobe"
    assert objs[-1] == {"type": "profile", "event": "f", "hits": 6, "misses": 0}


def test_refused_definition_prints_the_error_log_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = trace(capsys, "-e", "p:myprobe gcd dfd=%rax", "--call", "gcd(1, 2)")
    assert status == 2
    lines = err.splitlines()
    assert lines[0].endswith("trace_kprobe: error: Invalid register name")
    assert lines[1:] == ["  Command: p:myprobe gcd dfd=%rax", " " * 29 + "^"]


@pytest.mark.parametrize("argv", [
    ["--call", "no_such_function(1)"],
    ["--call", "gcd(1, [2])"],
    ["--call", "gcd"],
    ["--arch", "sparc", "--call", "gcd(1, 2)"],
    ["--image", "/no/such/image", "--call", "gcd(1, 2)"],
    ["-e", "-:never_defined"],
    ["-e", "q gcd"],
])
def test_bad_input_exits_2_without_a_traceback(capsys: pytest.CaptureFixture[str],
                                               argv: list[str]) -> None:
    status, _, err = trace(capsys, *argv)
    assert status == 2
    assert err.startswith("kprobe-ref") and "Traceback" not in err


def test_one_event_with_several_probes_and_group_deletion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, lines, err = trace(
        capsys, "-e", "p:grp/ev gcd a=%di", "-e", "p:grp/ev factorial a=%di",
        "-e", "p:other gcd", "--call", "gcd(48, 18)", "--call", "factorial(3)",
        "-e", "-:grp/", "--call", "gcd(1, 1)",
    )
    assert status == 0, err
    ev = events(lines)
    assert [(e[1], e[2].split("+")[0], e[3].get("a")) for e in ev] == [
        ("ev", "gcd", "0x30"), ("other", "gcd", None), ("ev", "factorial", "0x3"),
        ("other", "gcd", None),
    ]


def test_return_probe_on_an_address_inside_a_function_fails_to_register(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kprobe_ref.sim.elf import read_image

    gcd = read_image(bundled_image("x86_64"), "x86_64").symbols["gcd"]
    status, _, err = trace(capsys, "-e", f"r {gcd + 1:#x}", "--call", "gcd(1, 2)")
    assert status == 2
    assert "Failed to register probe event" in err and "not a function entry" in err


def test_deletion_matches_the_place_and_arguments_as_the_kernel_prints_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, lines, err = trace(
        capsys, "-e", "p:ev gcd a=%di", "-e", "p:ev factorial+0 a=%di",
        "-e", "-:ev factorial a=%di", "--call", "gcd(4, 6)", "--call", "factorial(3)",
        "-e", "-:ev gcd a=%si",
    )
    assert status == 2 and "No such file or directory" in err
    assert [(e[1], e[2].split("+")[0]) for e in events(lines)] == [("ev", "gcd")]
