"""Any interleaving of register, unregister, enable and disable on a corpus function keeps
the function's results and, once every probe is gone, restores the original bytes exactly
(property (c) of the foundation).  The model is a plain list of live handles."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kprobe_ref import Kprobe, KprobeError, ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

FUNCTION = "crc32_bitwise"


class Interleavings(RuleBasedStateMachine):
    """Random probe operations on one function of the x86_64 corpus."""

    @initialize()
    def setup(self) -> None:
        self.r = Runner("x86_64", bundled_image("x86_64"))
        self.spec = bundled_specs("x86_64")[FUNCTION]
        start, size = self.r.image.functions[FUNCTION], self.r.image.sizes[FUNCTION]
        self.start, self.size = start, size
        self.original = self.r.m.read(start, size)
        self.sites = self.r.instructions(FUNCTION)
        self.expected = [self.r.run(FUNCTION, c) for c in self.spec.cases[:2]]
        self.live: list[Kprobe] = []
        self.dead: list[Kprobe] = []

    @rule(pick=st.integers(0, 1 << 16), enabled=st.booleans())
    def register(self, pick: int, enabled: bool) -> None:
        addr = self.sites[pick % len(self.sites)]
        b = ProbeBuilder().with_symbol_addr(addr).with_enable(enabled)
        self.live.append(register_kprobe(self.r.m.manager, self.r.m.points, b))

    @rule(pick=st.integers(0, 1 << 16))
    def unregister(self, pick: int) -> None:
        if self.live:
            h = self.live.pop(pick % len(self.live))
            unregister_kprobe(self.r.m.manager, self.r.m.points, h)
            self.dead.append(h)

    @rule(pick=st.integers(0, 1 << 16))
    def unregister_again(self, pick: int) -> None:
        if self.dead:
            h = self.dead[pick % len(self.dead)]
            try:
                unregister_kprobe(self.r.m.manager, self.r.m.points, h)
            except KprobeError:
                return
            raise AssertionError("a double unregister was accepted")

    @rule(pick=st.integers(0, 1 << 16))
    def toggle(self, pick: int) -> None:
        if self.live:
            h = self.live[pick % len(self.live)]
            h.disable() if h.is_enabled() else h.enable()

    @rule()
    def run(self) -> None:
        got = [self.r.run(FUNCTION, c) for c in self.spec.cases[:2]]
        assert got == self.expected

    @invariant()
    def memory_matches_the_model(self) -> None:
        if not hasattr(self, "r"):
            return
        code = bytearray(self.original)
        armed = {h.address for h in self.live if h.enabled}
        for a in armed:
            code[a - self.start] = 0xCC
        assert self.r.m.read(self.start, self.size) == bytes(code)
        assert set(self.r.m.points) == {h.address for h in self.live}

    def teardown(self) -> None:
        if not hasattr(self, "r"):
            return
        for h in self.live:
            unregister_kprobe(self.r.m.manager, self.r.m.points, h)
        assert self.r.m.read(self.start, self.size) == self.original
        assert not self.r.m.points and not self.r.m.manager.debug_list


TestInterleavings = Interleavings.TestCase
