"""Kretprobe vectors: a function's entry state, the hijacked return, the state after it.

Each ISA gets a two-instruction leaf function (add the first two arguments, return) called
from :data:`RETURN_TO`.  A vector holds the entry state (``pre``), what the entry probe
changes (``hijack``: the return-address slot on the x86_64 stack, or the link register,
now holding the trampoline, computed by the ISA's own ``rethook_prepare``) and the state at
the real return address after the trampoline (``post``).  It is checked on the machine: the
unprobed call and the call with a kretprobe whose return handler runs once end in ``post``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kprobe_ref.arch import get_arch
from kprobe_ref.kretprobe import register_kretprobe, unregister_kretprobe
from kprobe_ref.probe import KretprobeBuilder
from kprobe_ref.ptregs import PtRegs
from kprobe_ref.tools.conformance.check import (
    Candidate,
    CheckFailed,
    Env,
    RecordingState,
    changed,
    code_pages,
    draw_state,
)
from kprobe_ref.tools.conformance.layout import CODE, PAGE, page_of
from kprobe_ref.tools.conformance.schema import SCHEMA_VERSION, State, hexint, state_json
from kprobe_ref.uprobe import register_uretprobe, unregister_uretprobe

__all__ = ["FUNCTIONS", "kretprobe_vectors"]

RETURN_TO = CODE + 0x10000
"""The caller's return address."""
STATES = 3
"""Entry states per function and mode."""


def _functions() -> dict[str, bytes]:
    from kprobe_ref.arch.loongarch64 import encoding as la

    return {
        "x86_64": bytes.fromhex("488d0437c3"),  # lea rax, [rdi + rsi]; ret
        "aarch64": (0x8B01_0000).to_bytes(4, "little") + (0xD65F_03C0).to_bytes(4, "little"),
        "riscv64": (0x00B5_0533).to_bytes(4, "little") + (0x0000_8067).to_bytes(4, "little"),
        "loongarch64": la.encode_3r(0x21, 4, 4, 5) + la.encode_jirl(0, 1, 0),
    }


FUNCTIONS = _functions()
"""The probed function of each ISA."""


def _entry(isa: str, n: int, user: bool) -> tuple[Candidate, State, list[tuple[int, bytes]]]:
    arch = get_arch(isa)
    c = Candidate(isa, "kretprobe", f"entry-{n}", FUNCTIONS[isa], CODE, user)
    pre = draw_state(arch, c, n)
    mem: list[tuple[int, bytes]] = []
    if arch.link_register is None:
        sp = pre.regs[arch.regs_class.SP]
        mem.append((sp, RETURN_TO.to_bytes(8, "little")))
    else:
        frame = arch.regs_class()
        pre.regs[frame.ALIASES.get(arch.link_register, arch.link_register)] = RETURN_TO
    return c, pre, mem


def _env(c: Candidate, mem: list[tuple[int, bytes]]) -> Env:
    arch = get_arch(c.isa)
    pages = {page_of(a) for a, _ in mem} | {page_of(RETURN_TO)}
    env = Env(arch, c.user, code_pages(c, c.raw), pages)
    for a, data in mem:
        env.space.write(a, data, enforce=False)
    env.space.add_function("kretprobe_vector", c.addr, len(c.raw))
    return env


def _run(c: Candidate, pre: State, mem: list[tuple[int, bytes]], probed: bool
         ) -> tuple[State, int | None, list[int]]:
    env = _env(c, mem)
    returns: list[int] = []
    handle, trampoline = None, None

    def on_return(_data: object, regs: PtRegs) -> None:
        returns.append(regs.pc)

    if probed:
        builder = KretprobeBuilder().with_symbol_addr(c.addr).with_ret_handler(on_return)
        if env.pid is None:
            handle = register_kretprobe(env.manager, env.points, builder)
        else:
            handle = register_uretprobe(env.manager, env.points,
                                        builder.with_user_mode(env.pid))
        trampoline = env.manager.rethooks.trampoline
    env.set_state(pre)
    env.run(c.addr, RETURN_TO, 64)
    post = env.state(())
    if handle is not None:
        if env.pid is None:
            unregister_kretprobe(env.manager, env.points, handle)
        else:
            unregister_uretprobe(env.manager, env.points, handle)
    return post, trampoline, returns


def _hijack(c: Candidate, pre: State, mem: list[tuple[int, bytes]], trampoline: int) -> State:
    """What the entry probe changes, by the ISA's own ``rethook_prepare``."""
    arch = get_arch(c.isa)
    frame = arch.regs_class()
    for k, v in pre.regs.items():
        frame.set(k, v)
    pages = code_pages(c, c.raw)
    for a, data in mem:
        page = bytearray(pages.get(page_of(a)) or bytes(PAGE))
        page[a - page_of(a): a - page_of(a) + len(data)] = data
        pages[page_of(a)] = bytes(page)
    rec = RecordingState(frame, {}, pages, c.addr)
    arch.rethook_prepare(rec, trampoline)
    regs = {k: frame.get(k) for k in pre.regs if frame.get(k) != pre.regs[k]}
    written = [(a, (rec.written[a]).to_bytes(1, "little")) for a in sorted(rec.written)]
    merged: list[tuple[int, bytes]] = []
    for a, b in written:
        if merged and merged[-1][0] + len(merged[-1][1]) == a:
            merged[-1] = (merged[-1][0], merged[-1][1] + b)
        else:
            merged.append((a, b))
    return State(regs, {}, {}, merged)


def kretprobe_vectors(isa: str) -> Iterator[dict[str, Any]]:
    """The checked kretprobe vectors of ``isa`` (kernel and user)."""
    for user in (False, True):
        for n in range(STATES):
            c, pre, mem = _entry(isa, n, user)
            plain, _, _ = _run(c, pre, mem, probed=False)
            probed, trampoline, returns = _run(c, pre, mem, probed=True)
            if probed != plain or len(returns) != 1 or trampoline is None:
                raise CheckFailed(f"{isa} kretprobe entry-{n}: probed {probed} != {plain} "
                                  f"or the return handler ran {len(returns)} times")
            pre.mem = mem
            plain.regs = changed(get_arch(isa), pre, plain)
            d = get_arch(isa).decode(c.raw, c.addr, user)
            hijack = _hijack(c, pre, mem, trampoline)
            yield {
                "schema": SCHEMA_VERSION, "kind": "kretprobe", "id": "", "isa": isa,
                "row": "kretprobe", "case": c.case, "bytes": c.raw.hex(),
                "addr": hexint(c.addr), "user": user, "verdict": d.verdict.value,
                "reason": d.reason, "trampoline": hexint(trampoline),
                "real_ret": hexint(RETURN_TO), "pre": state_json(pre),
                "hijack": state_json(hijack), "post": state_json(plain),
            }
