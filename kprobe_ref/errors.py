"""The errors kprobe-ref raises on bad input.

Every error raised for bad input derives from :class:`KprobeError`, names what was wrong and
where, and is raised before anything is changed: memory and the registered probes stay
exactly as they were.  Rejections of an instruction carry a stable reason code (listed in
``docs/verdicts.md``) besides the message.

Guest-side failures (an emulated instruction faulting, a run exceeding its step budget) are
not ``KprobeError``s; they live in :mod:`kprobe_ref.sim` as ``MachineError`` subclasses.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRegistered",
    "BlacklistedAddress",
    "InvalidAddress",
    "InvalidImage",
    "InvalidProbeDefinition",
    "KprobeError",
    "NoSuchProcess",
    "NotInstructionBoundary",
    "NotRegistered",
    "OutOfReach",
    "SimulatedFault",
    "SymbolNotUnique",
    "UnknownSymbol",
    "UnsupportedInstruction",
]


class KprobeError(Exception):
    """Base class of every error raised on bad input to the probe API."""


class InvalidAddress(KprobeError):
    """The probe address is unmapped, misaligned, not an instruction boundary, or reserved."""


class NotInstructionBoundary(InvalidAddress):
    """The address lies inside an instruction of a known function (Linux: ``-EILSEQ``)."""


class UnknownSymbol(InvalidAddress):
    """``with_symbol`` names no symbol the host knows (``kallsyms_lookup_name`` fails)."""


class SymbolNotUnique(InvalidAddress):
    """``with_symbol`` names several symbols; Linux refuses it ("The symbol is not
    unique") and asks for an address instead."""
class BlacklistedAddress(InvalidAddress):
    """Linux refuses a kprobe at the address (``within_kprobe_blacklist`` or a reserved
    site of ``check_kprobe_address_safe``); ``reason`` is ``blacklisted:<cause>``."""

    def __init__(self, message: str, cause: str, address: int) -> None:
        super().__init__(message)
        self.cause = cause
        self.reason = f"blacklisted:{cause}"
        self.address = address


class UnsupportedInstruction(KprobeError):
    """The instruction at the probe address cannot be probed; ``reason`` is a stable code."""

    def __init__(self, message: str, reason: str, address: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.address = address


class OutOfReach(UnsupportedInstruction):
    """A relocated operand would not reach its target from the out-of-line slot."""


class NotRegistered(KprobeError):
    """The probe handle is not (or no longer) registered: a double unregister, for example."""


class AlreadyRegistered(KprobeError):
    """The probe handle is registered already."""


class InvalidProbeDefinition(KprobeError):
    """The builder describes no valid probe (no address, a bad pool size, a wrong mode)."""


class InvalidImage(KprobeError):
    """A file is not a static ELF image of a supported ISA (or not of the one expected)."""


class NoSuchProcess(KprobeError):
    """The process id names no process of the machine."""


class SimulatedFault(Exception):
    """A simulated instruction's memory access faulted.

    Not a ``KprobeError``: it is a guest fault, raised out of the trap entry points to the
    host, which reports it at ``address`` (the probed instruction) as the CPU would have.
    """

    def __init__(self, address: int, fault_addr: int, detail: str) -> None:
        super().__init__(f"fault at {address:#x} accessing {fault_addr:#x}: {detail}")
        self.address = address
        self.fault_addr = fault_addr
        self.detail = detail
