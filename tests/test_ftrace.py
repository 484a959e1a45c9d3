"""Function entries as Linux boots them: the ftrace conversion of ``__mcount_loc`` sites,
kprobes on ftrace sites (x86_64, riscv64: a call, no trap, Linux's ``regs->pc``), the
arm64 refusal without kprobes on ftrace, and the x86_64 ENDBR64 adjustment of ``sym+0``.

The images are small kernel-shaped ELF files (``tests/kernel_elf.py``, ``ftrace_kernel``)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kprobe_ref import (
    InvalidAddress,
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.kernel.ftrace import (
    A64_MOV_X9_LR,
    A64_NOP,
    RV_NOP2,
    X86_NOP5,
    boot_convert,
    convert_site,
    ftrace_call,
    is_endbr,
)
from kprobe_ref.manager import check_probe
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.sim.machine import Machine
from tests.kernel_elf import (
    A64_DATA,
    A64_TEXT,
    RV_DATA,
    RV_TEXT,
    X86_DATA,
    X86_FUNCS,
    X86_TEXT,
    KernelImage,
    call_rel32,
    ftrace_kernel,
    rv_text,
    x86_text,
)


def _load(tmp_path: Path, isa: str, img: KernelImage) -> Machine:
    path = tmp_path / f"vmlinux-{isa}"
    path.write_bytes(img.build())
    m = Machine(isa, strict=True)
    m.load_elf(path)
    return m


@pytest.fixture
def x86(tmp_path: Path) -> Machine:
    table = [X86_TEXT + 0x24, 0, X86_TEXT + 0x10, X86_TEXT + 0x40, X86_TEXT + 0x10]
    return _load(tmp_path, "x86_64", ftrace_kernel(62, X86_TEXT, x86_text(), X86_DATA, table,
                                             X86_FUNCS))


@pytest.fixture
def riscv(tmp_path: Path) -> Machine:
    funcs = {"f": (0, 14), "stub": (0x20, 6)}
    return _load(tmp_path, "riscv64", ftrace_kernel(243, RV_TEXT, rv_text(), RV_DATA, [RV_TEXT],
                                              funcs))


@pytest.fixture
def arm64(tmp_path: Path) -> Machine:
    f = A64_NOP * 2 + struct.pack("<II", 0x8B010000, 0xD65F03C0)  # add x0,x0,x1; ret
    text = f + b"\0" * (0x40 - len(f))
    relas = [(A64_DATA + 8, 1027, A64_TEXT - (1 << 64))]  # R_AARCH64_RELATIVE fills it
    img = ftrace_kernel(183, A64_TEXT, text, A64_DATA, [0, 0], {"f": (0, 16)}, e_type=3,
                  relas=relas)
    return _load(tmp_path, "aarch64", img)


# -- the boot conversion ----------------------------------------------------------------------


def test_x86_fentry_calls_become_five_byte_nops_and_the_rest_stays(x86: Machine) -> None:
    t = x86.ftrace
    assert t is not None
    assert t.addresses == [X86_TEXT + 0x10, X86_TEXT + 0x24]
    assert x86.images[0].ftrace_sites == t.addresses
    assert (t.entries, t.padding, t.changed) == (4, 1, 2)  # one duplicate, one zero
    assert x86.read(X86_TEXT + 0x10, 5) == X86_NOP5
    assert x86.read(X86_TEXT + 0x24, 5) == X86_NOP5
    assert x86.read(X86_TEXT + 0x20, 4) == bytes.fromhex("f30f1efa")
    # an entry that is not a call site is reported and its bytes are left alone
    assert [e for e, _ in t.unconverted] == [X86_TEXT + 0x40]
    assert x86.read(X86_TEXT + 0x40, 6) == bytes.fromhex("b807000000c3")
    assert x86.call(X86_TEXT + 0x10, 3, 4) == 7


def test_x86_call_to_something_else_than_fentry_is_not_a_site() -> None:
    call_elsewhere = call_rel32(0x1000, 0x3000)
    assert isinstance(convert_site("x86_64", 0x1000, call_elsewhere, fentry=0x2000), str)
    site = convert_site("x86_64", 0x1000, call_rel32(0x1000, 0x2000), fentry=0x2000)
    assert not isinstance(site, str) and site.after == X86_NOP5 and site.address == 0x1000


def test_riscv_cnops_become_two_nops(riscv: Machine) -> None:
    t = riscv.ftrace
    assert t is not None and t.addresses == [RV_TEXT]
    assert riscv.read(RV_TEXT, 8) == RV_NOP2
    assert riscv.call(RV_TEXT, 5, 6) == 11


def test_arm64_relocated_table_and_mov_x9_lr(arm64: Machine) -> None:
    t = arm64.ftrace
    assert t is not None
    assert (t.entries, t.padding) == (1, 1)  # the RELATIVE relocation filled one entry
    assert t.addresses == [A64_TEXT + 4]  # ftrace_call_adjust: the second word
    assert arm64.read(A64_TEXT, 8) == A64_MOV_X9_LR + A64_NOP
    assert arm64.call(A64_TEXT, 5, 6) == 11


def test_a_machine_without_a_kernel_image_has_no_ftrace_sites() -> None:
    m = Machine("x86_64")
    assert m.ftrace is None and m.manager.ftrace is None


# -- kprobes on ftrace sites ------------------------------------------------------------------


def _regs_after_call(m: Machine, addr: int, *args: int) -> tuple[int, PtRegs]:
    ret = m.call(addr, *args)
    return ret, m.regs()


def test_x86_probe_on_fentry_site_is_a_call_not_a_trap(x86: Machine) -> None:
    site = X86_TEXT + 0x10
    want, regs0 = _regs_after_call(x86, site, 3, 4)
    seen: list[tuple[str, int, int]] = []

    def pre(_d: object, r: PtRegs) -> None:
        seen.append(("pre", r.pc, r.sp))

    def post(_d: object, r: PtRegs) -> None:
        seen.append(("post", r.pc, r.sp))

    h = register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol("f")
                        .with_pre_handler(pre).with_post_handler(post))
    assert h.ftrace and h.address == site and h.point is not None and h.point.slot_addr is None
    assert x86.read(site, 1) == b"\xe8"  # the site calls the trampoline
    got, regs1 = _regs_after_call(x86, site, 3, 4)
    assert got == want and regs1 == regs0
    assert x86.trap_count == 0 and x86.ftrace_calls == 1 and h.nhit == 1
    sp_at_site = regs0.sp - 8  # the caller's return address is on the stack at the site
    assert seen == [("pre", site + 1, sp_at_site), ("post", site + 5, sp_at_site)]
    unregister_kprobe(x86.manager, x86.points, h)
    assert x86.read(site, 5) == X86_NOP5


def test_x86_non_site_probe_still_traps(x86: Machine) -> None:
    h = register_kprobe(x86.manager, x86.points,
                        ProbeBuilder().with_symbol("f").with_offset(5)
                        .with_post_handler(lambda _d, _r: None))
    assert not h.ftrace and x86.read(X86_TEXT + 0x15, 1) == b"\xcc"
    assert x86.call(X86_TEXT + 0x10, 3, 4) == 7
    assert x86.trap_count == 2 and x86.ftrace_calls == 0


def test_x86_pre_handler_that_sets_the_pc_skips_post_handlers(x86: Machine) -> None:
    posts: list[int] = []

    def divert(_d: object, r: PtRegs) -> bool:
        r.pc = X86_TEXT + 0x60  # returns 42 to f's caller: sp is as at the site
        return True

    h = register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol("f")
                        .with_pre_handler(divert)
                        .with_post_handler(lambda _d, r: posts.append(r.pc)))
    assert h.ftrace
    assert x86.call(X86_TEXT + 0x10, 3, 4) == 42
    assert posts == []


def test_x86_disabled_ftrace_probe_restores_the_nop_and_shares_the_point(x86: Machine) -> None:
    site = X86_TEXT + 0x10
    hits: list[str] = []
    a = register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol_addr(site)
                        .with_pre_handler(lambda _d, _r: hits.append("a")))
    b = register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol_addr(site)
                        .with_pre_handler(lambda _d, _r: hits.append("b")))
    assert a.point is b.point
    x86.call(site, 1, 2)
    assert hits == ["a", "b"]
    a.disable()
    b.disable()
    assert x86.read(site, 5) == X86_NOP5
    x86.call(site, 1, 2)
    assert hits == ["a", "b"] and x86.ftrace_calls == 1
    b.enable()
    x86.call(site, 1, 2)
    assert hits == ["a", "b", "b"]
    unregister_kprobe(x86.manager, x86.points, a)
    unregister_kprobe(x86.manager, x86.points, b)
    assert x86.read(site, 5) == X86_NOP5


def test_x86_ftrace_hit_inside_a_handler_is_missed(x86: Machine) -> None:
    inner: list[int] = []

    def pre(_d: object, _r: PtRegs) -> None:
        inner.append(x86.call(X86_TEXT + 0x10, 10, 20))

    h = register_kprobe(x86.manager, x86.points,
                        ProbeBuilder().with_symbol("f").with_pre_handler(pre))
    assert x86.call(X86_TEXT + 0x10, 1, 2) == 3
    assert inner == [30] and h.nmissed == 1 and h.nhit == 1


def test_x86_kretprobe_on_an_ftrace_site(x86: Machine) -> None:
    rets: list[int] = []
    rp = register_kretprobe(x86.manager, x86.points, KretprobeBuilder().with_symbol("f")
                            .with_ret_handler(lambda _d, r: rets.append(r.rax)))
    assert rp.kprobe is not None and rp.kprobe.ftrace
    assert x86.call(X86_TEXT + 0x10, 2, 5) == 7
    assert rets == [7]
    unregister_kretprobe(x86.manager, x86.points, rp)
    assert x86.read(X86_TEXT + 0x10, 5) == X86_NOP5


@pytest.mark.parametrize("isa", ["x86_64", "riscv64"])
def test_ftrace_probe_on_several_cpus(tmp_path: Path, isa: str) -> None:
    if isa == "x86_64":
        img = ftrace_kernel(62, X86_TEXT, x86_text(), X86_DATA, [X86_TEXT + 0x10], X86_FUNCS)
        entry = X86_TEXT + 0x10
    else:
        img = ftrace_kernel(243, RV_TEXT, rv_text(), RV_DATA, [RV_TEXT], {"f": (0, 14)})
        entry = RV_TEXT
    path = tmp_path / "vmlinux"
    path.write_bytes(img.build())
    m = Machine(isa, cpus=2)
    m.load_elf(path)
    hits: list[int] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("f")
                    .with_pre_handler(lambda _d, _r: hits.append(m.current_cpu())))
    for cpu in (0, 1):
        m.start(cpu, entry, cpu, 40)
    while not (m.done(0) and m.done(1)):
        for cpu in (0, 1):
            if not m.done(cpu):
                m.step(cpu)
    assert (m.result(0), m.result(1)) == (40, 41)
    assert sorted(hits) == [0, 1] and m.trap_count == 0 and m.ftrace_calls == 2


def test_riscv_probe_on_patchable_area_is_a_call_through_t0(riscv: Machine) -> None:
    want, regs0 = _regs_after_call(riscv, RV_TEXT, 5, 6)
    seen: list[tuple[str, int, int]] = []
    h = register_kprobe(riscv.manager, riscv.points, ProbeBuilder().with_symbol("f")
                        .with_pre_handler(lambda _d, r: seen.append(("pre", r.pc, r.ra)))
                        .with_post_handler(lambda _d, r: seen.append(("post", r.pc, r.ra))))
    assert h.ftrace and riscv.read(RV_TEXT, 8) != RV_NOP2
    got, regs1 = _regs_after_call(riscv, RV_TEXT, 5, 6)
    assert got == want and riscv.trap_count == 0 and riscv.ftrace_calls == 1
    ra = regs0.ra  # the call links through t0: ra is the caller's throughout
    assert seen == [("pre", RV_TEXT, ra), ("post", RV_TEXT + 8, ra)]
    assert regs1.t0 == RV_TEXT + 8  # the call clobbers t0, as on Linux
    regs1.t0 = regs0.t0
    assert regs1 == regs0
    unregister_kprobe(riscv.manager, riscv.points, h)
    assert riscv.read(RV_TEXT, 8) == RV_NOP2


def test_riscv_probe_on_the_second_nop_is_an_ordinary_breakpoint(riscv: Machine) -> None:
    h = register_kprobe(riscv.manager, riscv.points,
                        ProbeBuilder().with_symbol("f").with_offset(4))
    assert not h.ftrace
    assert riscv.call(RV_TEXT, 5, 6) == 11 and riscv.trap_count >= 1


def test_riscv_pre_handler_that_sets_the_pc(riscv: Machine) -> None:
    def divert(_d: object, r: PtRegs) -> bool:
        r.pc = RV_TEXT + 0x20
        return True

    register_kprobe(riscv.manager, riscv.points,
                    ProbeBuilder().with_symbol("f").with_pre_handler(divert))
    assert riscv.call(RV_TEXT, 5, 6) == 42


def test_arm64_ftrace_site_is_refused_without_kprobes_on_ftrace(arm64: Machine) -> None:
    with pytest.raises(InvalidAddress, match="ftrace site"):
        register_kprobe(arm64.manager, arm64.points,
                        ProbeBuilder().with_symbol("f").with_offset(4))
    assert arm64.read(A64_TEXT, 8) == A64_MOV_X9_LR + A64_NOP
    h = register_kprobe(arm64.manager, arm64.points, ProbeBuilder().with_symbol("f"))
    assert not h.ftrace
    assert arm64.call(A64_TEXT, 5, 6) == 11 and arm64.trap_count >= 1
    unregister_kprobe(arm64.manager, arm64.points, h)
    assert arm64.read(A64_TEXT, 8) == A64_MOV_X9_LR + A64_NOP


def test_check_probe_reports_an_ftrace_point(x86: Machine) -> None:
    tramp = x86.host_calls
    assert tramp  # placed with the kernel, not by the question
    point = check_probe(x86.manager, x86.points, X86_TEXT + 0x10)
    assert point.ftrace and point.original == X86_NOP5 and x86.host_calls == tramp
    assert not x86.points
    assert x86.read(X86_TEXT + 0x10, 5) == X86_NOP5


def test_ftrace_call_encodings_reach_their_target() -> None:
    assert ftrace_call("x86_64", 0x1000, 0x2000) == call_rel32(0x1000, 0x2000)
    for delta in (0, 4, 0x7FC, 0x800, 0x801, -0x800, -0x801, 0x1234_5678, -0x7000_0000):
        auipc, jalr = struct.unpack("<II", ftrace_call("riscv64", 0x8000_0000, 0x8000_0000
                                                       + delta))
        hi = ((auipc >> 12) ^ 0x80000) - 0x80000
        lo = ((jalr >> 20) ^ 0x800) - 0x800
        assert (auipc & 0xFFF, jalr & 0xFFFFF) == (0x297, 0x282E7)  # auipc t0; jalr t0, (t0)
        assert (hi << 12) + lo == delta
    with pytest.raises(ValueError, match="reach"):
        ftrace_call("x86_64", 0, 1 << 32)


# -- ENDBR64 ----------------------------------------------------------------------------------


def test_endbr_words() -> None:
    assert is_endbr(int.from_bytes(bytes.fromhex("f30f1efa"), "little"))
    assert is_endbr(int.from_bytes(bytes.fromhex("f30f1efb"), "little"))  # endbr32
    assert is_endbr(int.from_bytes(bytes.fromhex("0f1f40d6"), "little"))  # sealed
    assert not is_endbr(int.from_bytes(X86_NOP5[:4], "little"))


@pytest.mark.parametrize("how", ["symbol", "address", "offset4"])
def test_sym0_on_an_endbr_function_moves_past_it(x86: Machine, how: str) -> None:
    g = X86_TEXT + 0x20
    builder = {
        "symbol": ProbeBuilder().with_symbol("g"),
        "address": ProbeBuilder().with_symbol_addr(g),
        "offset4": ProbeBuilder().with_symbol("g").with_offset(4),
    }[how]
    pcs: list[int] = []
    h = register_kprobe(x86.manager, x86.points, builder.with_pre_handler(
        lambda _d, r: pcs.append(r.pc)))
    assert h.address == g + 4 and h.ftrace  # g+4 is g's fentry site
    assert x86.read(g, 4) == bytes.fromhex("f30f1efa")  # the landing pad stays intact
    assert x86.call(g, 9) == 10 and pcs == [g + 5]
    unregister_kprobe(x86.manager, x86.points, h)


def test_endbr_kretprobe_reports_the_adjusted_address(x86: Machine) -> None:
    rets: list[int] = []
    rp = register_kretprobe(x86.manager, x86.points, KretprobeBuilder().with_symbol("g")
                            .with_ret_handler(lambda _d, r: rets.append(r.rax)))
    assert rp.address == X86_TEXT + 0x24
    assert x86.call(X86_TEXT + 0x20, 1) == 2 and rets == [2]


def test_functions_without_endbr_and_other_offsets_are_not_moved(x86: Machine) -> None:
    h = register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol("h"))
    assert h.address == X86_TEXT + 0x40 and not h.ftrace
    unregister_kprobe(x86.manager, x86.points, h)
    k = register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol("g").with_offset(9))
    assert k.address == X86_TEXT + 0x29


@pytest.mark.parametrize("isa", ["x86_64", "riscv64"])
def test_ftrace_probe_on_the_pcode_cpu(tmp_path: Path, isa: str) -> None:
    if isa == "x86_64":
        img = ftrace_kernel(62, X86_TEXT, x86_text(), X86_DATA, [X86_TEXT + 0x10], X86_FUNCS)
        entry, args, want = X86_TEXT + 0x10, (3, 4), 7
    else:
        img = ftrace_kernel(243, RV_TEXT, rv_text(), RV_DATA, [RV_TEXT], {"f": (0, 14)})
        entry, args, want = RV_TEXT, (5, 6), 11
    path = tmp_path / "vmlinux"
    path.write_bytes(img.build())
    m = Machine(isa, cpu="pcode", strict=True)
    m.load_elf(path)
    pcs: list[int] = []
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("f")
                        .with_pre_handler(lambda _d, r: pcs.append(r.pc)))
    assert h.ftrace and m.call(entry, *args) == want
    assert pcs == [entry + (1 if isa == "x86_64" else 0)] and m.trap_count == 0


def test_riscv_ftrace_call_and_a_breakpoint_never_share_the_area(riscv: Machine) -> None:
    inner = register_kprobe(riscv.manager, riscv.points,
                            ProbeBuilder().with_symbol("f").with_offset(4))
    with pytest.raises(InvalidAddress, match="would cover the probe"):
        register_kprobe(riscv.manager, riscv.points, ProbeBuilder().with_symbol("f"))
    unregister_kprobe(riscv.manager, riscv.points, inner)
    site = register_kprobe(riscv.manager, riscv.points, ProbeBuilder().with_symbol("f"))
    assert site.ftrace
    with pytest.raises(InvalidAddress, match="inside the ftrace call"):
        register_kprobe(riscv.manager, riscv.points,
                        ProbeBuilder().with_symbol("f").with_offset(4))
    unregister_kprobe(riscv.manager, riscv.points, site)
    assert riscv.read(RV_TEXT, 8) == RV_NOP2
    assert riscv.call(RV_TEXT, 5, 6) == 11


def test_booted_text_converts_to_itself_and_foreign_bytes_are_refused() -> None:
    for isa, booted in (("x86_64", X86_NOP5), ("aarch64", A64_MOV_X9_LR + A64_NOP),
                        ("riscv64", RV_NOP2)):
        site = convert_site(isa, 0x1000, booted)
        assert not isinstance(site, str) and site.after == booted
    assert isinstance(convert_site("aarch64", 0x1000, bytes.fromhex("3f2303d51f2003d5")), str)
    assert isinstance(convert_site("riscv64", 0x1000, bytes.fromhex("0100010041112ee0")), str)


def test_entries_outside_the_image_are_reported_not_fatal() -> None:
    memory = {0x100: X86_NOP5}
    table = struct.pack("<QQ", 0x100, 0x900)

    def read(addr: int, n: int) -> bytes:
        if addr == 0x2000:
            return table[:n]
        if addr in memory:
            return memory[addr][:n]
        raise InvalidAddress(f"{addr:#x} is not mapped")

    t = boot_convert("x86_64", {"__start_mcount_loc": 0x2000, "__stop_mcount_loc": 0x2010},
                     read, lambda _a, _d: None)
    assert t is not None and t.addresses == [0x100] and t.changed == 0
    assert [e for e, _ in t.unconverted] == [0x900]
    assert boot_convert("loongarch64", {}, read, lambda _a, _d: None) is None


def test_a_handlers_stack_pointer_is_not_restored_by_the_trampoline(x86: Machine) -> None:
    want, regs0 = _regs_after_call(x86, X86_TEXT + 0x10, 3, 4)

    def move_sp(_d: object, r: PtRegs) -> None:
        r.sp = r.sp - 0x100

    register_kprobe(x86.manager, x86.points,
                    ProbeBuilder().with_symbol("f").with_post_handler(move_sp))
    got, regs1 = _regs_after_call(x86, X86_TEXT + 0x10, 3, 4)
    assert got == want and regs1 == regs0


def test_the_trampoline_is_near_the_text_and_not_probeable(x86: Machine) -> None:
    register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol("f"))
    (tramp,) = x86.host_calls
    assert abs(tramp - X86_TEXT) < 1 << 31
    x86.add_symbol("tramp", tramp, 16)
    with pytest.raises(InvalidAddress, match="must not be probed"):
        register_kprobe(x86.manager, x86.points, ProbeBuilder().with_symbol_addr(tramp))


@pytest.mark.parametrize("isa", ["x86_64", "riscv64"])
def test_reads_inside_an_armed_ftrace_call_see_the_booted_nops(tmp_path: Path, isa: str) -> None:
    if isa == "x86_64":
        img = ftrace_kernel(62, X86_TEXT, x86_text(), X86_DATA, [X86_TEXT + 0x10], X86_FUNCS)
        site, nops = X86_TEXT + 0x10, X86_NOP5
    else:
        img = ftrace_kernel(243, RV_TEXT, rv_text(), RV_DATA, [RV_TEXT], {"f": (0, 14)})
        site, nops = RV_TEXT, RV_NOP2
    path = tmp_path / "vmlinux"
    path.write_bytes(img.build())
    m = Machine(isa)
    m.load_elf(path)
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("f"))
    assert m.read(site, len(nops)) != nops
    for off in range(len(nops)):
        seen = m.points.overlay_original(site + off, m.read(site + off, len(nops) - off))
        assert seen == nops[off:]
