#!/usr/bin/env python3
"""Build the kernel-shaped test images: small vmlinux-like ELF files for every ISA.

Every ``kprobe_ref/corpus/vmlinux/src/*.c`` file is compiled on its own with
``python -m ziglang cc -c`` and kernel-style flags, and the objects are linked
with the same package's ``ld.lld`` (as Kbuild links vmlinux with ``ld``, not
through the compiler driver) by ``link-<isa>.ld``, which sets the ISA's
kernel-half link address and includes ``vmlinux.ld``.  Two images per ISA:

``kprobe_ref/corpus/vmlinux/<isa>/vmlinux.elf``
    ``ET_EXEC``, non-PIC code (``-mcmodel=kernel`` on x86_64, ``-mcmodel=medany``
    on riscv64), as an x86_64 or riscv64 vmlinux;
``kprobe_ref/corpus/vmlinux/<isa>/vmlinux-pie.elf``
    ``ET_DYN``, position-independent code linked with ``-pie --no-dynamic-linker
    --no-apply-dynamic-relocs``, as an arm64 vmlinux: the words the
    ``R_*_RELATIVE`` entries of ``.rela.dyn`` patch are zero in the file.

Both have ``.data..percpu`` linked at virtual address 0 in a ``PT_LOAD`` of its
own, text in the kernel half, two ``static`` functions named ``helper``, a
``NOKPROBE_SYMBOL`` table, ``.kprobes.text``, and ``__jump_table`` and
``__bug_table`` entries (docs/real-kernels.md).
The script writes ``kprobe_ref/corpus/vmlinux/manifest.json`` with the
toolchain version, every command of every image (run from the
``kprobe_ref/corpus/vmlinux`` directory, objects under ``build/``, which is
removed afterwards), and the SHA-256 and size of every image and input file.

``--check`` rebuilds into a temporary directory instead, compares the result
byte for byte with the committed images and exits non-zero on a difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from build_corpus import compare_rebuild, file_record, zig_version

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "kprobe_ref" / "corpus" / "vmlinux"
SRC = IMAGES / "src"
MANIFEST = IMAGES / "manifest.json"

ISAS: tuple[str, ...] = ("x86_64", "aarch64", "riscv64", "loongarch64")

#: The link address of each ISA's kernel text, as in its Linux configuration.
LINK_ADDRESS: dict[str, int] = {
    "x86_64": 0xFFFF_FFFF_8100_0000,
    "aarch64": 0xFFFF_8000_0800_0000,
    "riscv64": 0xFFFF_FFFF_8020_0000,
    "loongarch64": 0x9000_0000_0020_0000,
}

#: The two image kinds: name -> ELF type.
KINDS: dict[str, str] = {"vmlinux": "ET_EXEC", "vmlinux-pie": "ET_DYN"}

#: Compiler flags shared by every object, in command-line order.
CFLAGS: tuple[str, ...] = (
    "-O2",
    "-ffreestanding",
    "-fno-builtin",
    "-nostdlib",
    "-fno-stack-protector",
    "-fno-sanitize=all",
    "-fno-vectorize",
    "-fno-slp-vectorize",
    "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables",
    "-g0",
    "-Wall",
    "-Wextra",
    "-Werror",
)

#: Per-ISA kernel flags.  x86_64: no red zone, no SSE/MMX/x87 (the kernel does not save
#: vector state on entry).  aarch64: a CPU without FP and NEON, which zig honours where it
#: ignores -mgeneral-regs-only.  riscv64: rv64imac with the soft-float lp64 ABI, as the
#: kernel's -march=rv64imac -mabi=lp64.  loongarch64: no LSX/LASX.
ARCH_CFLAGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("-mno-red-zone", "-mno-sse", "-mno-sse2", "-mno-mmx", "-mno-avx",
               "-mno-80387"),
    "aarch64": ("-mcpu=generic-neon-fp_armv8",),
    "riscv64": ("-mcpu=generic_rv64+m+a+c+zicsr+zifencei", "-mcmodel=medany"),
    "loongarch64": ("-mno-lsx", "-mno-lasx"),
}

#: Code-generation flags of each kind: the ``ET_EXEC`` image is non-PIC (x86_64's
#: kernel code model puts text and data in the top 2 GiB, addressed by sign-extended
#: 32-bit absolutes); the ``ET_DYN`` one position-independent.
KIND_CFLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "vmlinux": {
        isa: ("-fno-pic", "-fno-pie", *(("-mcmodel=kernel",) if isa == "x86_64" else ()))
        for isa in ISAS
    },
    "vmlinux-pie": {isa: ("-fpie",) for isa in ISAS},
}

#: Linker flags shared by every image.
LDFLAGS: tuple[str, ...] = (
    "--entry=kernel_entry",
    "--build-id=none",
    "-z", "max-page-size=4096",
    "-z", "norelro",
    "--no-undefined",
    "--no-gc-sections",
)

#: Linker flags of each kind: the ET_DYN image keeps .rela.dyn and leaves the words it
#: patches zero in the file (arm64's LDFLAGS_vmlinux).
KIND_LDFLAGS: dict[str, tuple[str, ...]] = {
    "vmlinux": ("-static",),
    "vmlinux-pie": ("-pie", "--no-dynamic-linker", "-z", "notext", "-Bsymbolic",
                    "--no-apply-dynamic-relocs"),
}


@dataclass(frozen=True)
class Image:
    """One image to build: its ISA and kind."""

    isa: str
    kind: str

    @property
    def rel_path(self) -> str:
        """The image's path relative to the images directory."""
        return f"{self.isa}/{self.kind}.elf"

    def objects(self, root: str = "") -> list[tuple[str, str]]:
        """``(source, object)`` pairs, objects under ``root`` + ``build/``."""
        return [(src, f"{root}build/{self.isa}/{self.kind}/{Path(src).stem}.o")
                for src in c_sources()]

    def commands(self, root: str = "") -> list[list[str]]:
        """Every command that builds the image, outputs under ``root`` (empty for the
        manifest's canonical, relative form)."""
        cmds: list[list[str]] = []
        for src, obj in self.objects(root):
            cmds.append(["python", "-m", "ziglang", "cc", "-target",
                         f"{self.isa}-freestanding-none", *CFLAGS, *ARCH_CFLAGS[self.isa],
                         *KIND_CFLAGS[self.kind][self.isa], "-c", "-o", obj, src])
        cmds.append(["python", "-m", "ziglang", "ld.lld", *LDFLAGS, *KIND_LDFLAGS[self.kind],
                     "-T", f"link-{self.isa}.ld", "-o", f"{root}{self.rel_path}",
                     *(obj for _, obj in self.objects(root))])
        return cmds


def c_sources() -> list[str]:
    """The C sources, relative to the images directory, in a stable order."""
    return sorted(f"src/{p.name}" for p in SRC.glob("*.c"))


def input_files() -> list[str]:
    """Every file an image depends on, relative to the images directory."""
    files = [*c_sources(), *(f"src/{p.name}" for p in SRC.glob("*.h")), "vmlinux.ld"]
    files += [f"link-{isa}.ld" for isa in ISAS]
    return sorted(files)


def images() -> list[Image]:
    """The images to build."""
    return [Image(isa, kind) for isa in ISAS for kind in KINDS]


def run(cmd: list[str], what: str) -> None:
    """Run one build command from the images directory; any diagnostic is an error."""
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=IMAGES, capture_output=True,
                          text=True)
    if proc.returncode != 0 or proc.stderr.strip() or proc.stdout.strip():
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"build of {what} failed or printed diagnostics")


def build(out_dir: Path) -> None:
    """Build every image into ``out_dir`` (the images directory or a scratch one)."""
    root = "" if out_dir == IMAGES else f"{out_dir}/"
    try:
        for image in images():
            (out_dir / image.isa).mkdir(parents=True, exist_ok=True)
            (out_dir / "build" / image.isa / image.kind).mkdir(parents=True, exist_ok=True)
            for cmd in image.commands(root):
                run(cmd, image.rel_path)
    finally:
        shutil.rmtree(out_dir / "build", ignore_errors=True)


def manifest() -> dict[str, object]:
    """The manifest describing the committed images and their inputs."""
    return {
        "generator": "tools/build_kernel_images.py",
        "zig_version": zig_version(),
        "ziglang_package": metadata.version("ziglang"),
        "working_directory": "kprobe_ref/corpus/vmlinux",
        "images": {
            image.rel_path: {
                "isa": image.isa,
                "kind": image.kind,
                "e_type": KINDS[image.kind],
                "link_address": f"{LINK_ADDRESS[image.isa]:#x}",
                "commands": image.commands(),
                **file_record(IMAGES / image.rel_path),
            }
            for image in images()
        },
        "sources": {name: file_record(IMAGES / name) for name in input_files()},
    }


def check() -> int:
    """Rebuild into a scratch directory and compare with the committed images."""
    return compare_rebuild("kprobe-vmlinux-", IMAGES, [i.rel_path for i in images()], build,
                           MANIFEST, manifest)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="rebuild into a temporary directory and compare")
    opts = parser.parse_args(argv)
    if opts.check:
        return check()
    build(IMAGES)
    MANIFEST.write_text(json.dumps(manifest(), indent=2, sort_keys=True) + "\n")
    for image in images():
        print(f"{image.rel_path}: {(IMAGES / image.rel_path).stat().st_size} bytes")
    print(f"wrote {MANIFEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
