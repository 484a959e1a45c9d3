#!/usr/bin/env python3
"""Build the bundled sample corpus: per-ISA static ELF images from C and assembly.

For each ISA this links every ``kprobe_ref/corpus/src/*.c`` file together with
``kprobe_ref/corpus/src/<isa>/classes.S`` into two images:

``kprobe_ref/corpus/<isa>/kernel.elf``
    kernel-style code (``-mno-red-zone -mcmodel=kernel`` on x86_64,
    ``-mcmodel=medany`` on riscv64, no LSX/LASX on loongarch64), linked by
    ``link-<isa>.ld`` (which sets ``KERNEL_TEXT`` and includes ``link.ld``) at
    the ISA's Linux kernel text address, :data:`KERNEL_TEXT`;
``kprobe_ref/corpus/<isa>/user.elf``
    user-style code, linked at 0x10000000 by ``link-user.ld``.

The compiler is the ``ziglang`` package's ``zig cc``.  The script then writes
``kprobe_ref/corpus/manifest.json`` with the toolchain version, the exact
command line of every image, and the SHA-256 and size of every image and
input file.

``--check`` rebuilds into a temporary directory instead, compares the result
byte for byte with the committed images and exits non-zero on a difference.

Every command runs with the corpus directory as its working directory and
names its inputs by relative path, so the file-name symbols in the images do
not depend on where the repository is checked out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "kprobe_ref" / "corpus"
SRC = CORPUS / "src"
MANIFEST = CORPUS / "manifest.json"

ISAS: tuple[str, ...] = ("x86_64", "aarch64", "riscv64", "loongarch64")

#: Flags shared by every image, in command-line order.
COMMON_FLAGS: tuple[str, ...] = (
    "-O2",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-pic",
    "-fno-pie",
    "-static",
    "-nostdlib",
    "-fno-vectorize",
    "-fno-slp-vectorize",
    "-fno-stack-protector",
    "-fno-sanitize=all",
    "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables",
    "-g0",
    "-Wall",
    "-Wextra",
    "-Werror",
)

#: Linker flags shared by every image.
LINK_FLAGS: tuple[str, ...] = (
    "-Wl,--entry=corpus_entry",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,norelro",
    "-Wl,--no-undefined",
    "-Wl,--no-gc-sections",
)

#: Each ISA's Linux kernel text address, where the kernel-style image is linked:
#: x86_64's __START_KERNEL_map + 16 MiB, arm64's KIMAGE_VADDR with 48-bit VAs,
#: riscv64's kernel mapping in the top 2 GiB, loongarch64's cached window (DMW)
#: base + 2 MiB.
KERNEL_TEXT: dict[str, int] = {
    "x86_64": 0xFFFF_FFFF_8100_0000,
    "aarch64": 0xFFFF_8000_0800_0000,
    "riscv64": 0xFFFF_FFFF_8020_0000,
    "loongarch64": 0x9000_0000_0020_0000,
}

#: Per-ISA flags for kernel-style images.  Code models: x86_64's ``kernel`` puts
#: text and data in the top 2 GiB, addressed by sign-extended 32-bit absolutes;
#: riscv64's ``medany`` addresses symbols PC-relatively (``medlow``, the default,
#: only reaches the low and top 2 GiB through lui's sign extension, which the
#: top-2-GiB text would satisfy, but Linux builds with ``medany``); aarch64's
#: and loongarch64's default models are already PC-relative (adrp, pcalau12i)
#: and need no flag.  On aarch64 zig cc accepts but
#: ignores -mgeneral-regs-only (its explicit CPU feature list wins: the C code
#: still used NEON CNT/ADDV for popcount), so the kernel-style image names a
#: CPU without FP and NEON instead, which keeps the C code to general registers
#: as Linux does; classes.S re-enables fp/simd for itself with .arch_extension.
KERNEL_FLAGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("-mno-red-zone", "-mcmodel=kernel"),
    "aarch64": ("-mcpu=generic-neon-fp_armv8",),
    "riscv64": ("-mcmodel=medany",),
    "loongarch64": ("-mno-lsx", "-mno-lasx"),
}

#: Per-ISA flags for user-style images.
USER_FLAGS: dict[str, tuple[str, ...]] = {
    "x86_64": (),
    "aarch64": (),
    "riscv64": (),
    "loongarch64": ("-mno-lsx", "-mno-lasx"),
}

#: The two image kinds: name -> (link script, per-ISA flags).  The kernel kind's
#: ``link.ld`` is reached through the per-ISA ``link-<isa>.ld`` (:func:`link_script`).
KINDS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "kernel": ("link.ld", KERNEL_FLAGS),
    "user": ("link-user.ld", USER_FLAGS),
}


@dataclass(frozen=True)
class Image:
    """One image to build: its ISA, kind and the arguments after ``zig cc``."""

    isa: str
    kind: str
    args: tuple[str, ...]

    @property
    def rel_path(self) -> str:
        """The image's path relative to the corpus directory."""
        return f"{self.isa}/{self.kind}.elf"


def zig_cc() -> list[str]:
    """The command prefix that runs ``zig cc`` from the ziglang package."""
    return [sys.executable, "-m", "ziglang", "cc"]


def zig_version() -> str:
    """The version that ``zig version`` reports."""
    out = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def ziglang_package_version() -> str:
    """The installed version of the ``ziglang`` Python package."""
    return metadata.version("ziglang")


def c_sources() -> list[str]:
    """The C sources, relative to the corpus directory, in a stable order."""
    return sorted(f"src/{p.name}" for p in SRC.glob("*.c"))


def input_files() -> list[str]:
    """Every file an image depends on, relative to the corpus directory."""
    files = c_sources()
    files += [f"src/{isa}/classes.S" for isa in ISAS]
    files += [script for script, _ in KINDS.values()]
    files += [f"link-{isa}.ld" for isa in ISAS]
    return sorted(files)


def link_script(isa: str, kind: str) -> str:
    """The link script of one image: ``link-<isa>.ld`` for kernel-style images (it sets
    the ISA's ``KERNEL_TEXT`` and includes ``link.ld``), ``link-user.ld`` for user ones."""
    return f"link-{isa}.ld" if kind == "kernel" else KINDS[kind][0]


def images() -> list[Image]:
    """The images to build, with their full ``zig cc`` argument lists."""
    out: list[Image] = []
    for isa in ISAS:
        for kind, (_, per_isa) in KINDS.items():
            args = (
                "-target",
                f"{isa}-freestanding-none",
                *COMMON_FLAGS,
                *per_isa[isa],
                *LINK_FLAGS,
                "-T",
                link_script(isa, kind),
                "-o",
                f"{isa}/{kind}.elf",
                *c_sources(),
                f"src/{isa}/classes.S",
            )
            out.append(Image(isa, kind, args))
    return out


def retarget(args: tuple[str, ...], out_dir: Path) -> list[str]:
    """``args`` with the ``-o`` operand moved under ``out_dir``."""
    result = list(args)
    i = result.index("-o")
    result[i + 1] = str(out_dir / result[i + 1])
    return result


def build(out_dir: Path) -> None:
    """Build every image into ``out_dir`` (the corpus directory or a scratch one)."""
    for image in images():
        (out_dir / image.isa).mkdir(parents=True, exist_ok=True)
        cmd = zig_cc() + retarget(image.args, out_dir)
        proc = subprocess.run(cmd, cwd=CORPUS, capture_output=True, text=True)
        if proc.returncode != 0 or proc.stderr.strip():
            sys.stderr.write(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise SystemExit(f"build of {image.rel_path} failed")
            raise SystemExit(f"build of {image.rel_path} printed diagnostics")


def file_record(path: Path) -> dict[str, object]:
    """SHA-256 and size of one file."""
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def manifest() -> dict[str, object]:
    """The manifest describing the committed images and their inputs."""
    return {
        "generator": "tools/build_corpus.py",
        "zig_version": zig_version(),
        "ziglang_package": ziglang_package_version(),
        "working_directory": "kprobe_ref/corpus",
        "compiler": "python -m ziglang cc",
        "common_flags": list(COMMON_FLAGS),
        "link_flags": list(LINK_FLAGS),
        "images": {
            image.rel_path: {
                "isa": image.isa,
                "kind": image.kind,
                "command": ["python", "-m", "ziglang", "cc", *image.args],
                **file_record(CORPUS / image.rel_path),
            }
            for image in images()
        },
        "sources": {name: file_record(CORPUS / name) for name in input_files()},
    }


def compare_rebuild(prefix: str, committed: Path, rel_paths: list[str],
                    build_into: Callable[[Path], None], manifest_path: Path,
                    current_manifest: Callable[[], dict[str, object]]) -> int:
    """Rebuild into a scratch directory and compare every image, and the manifest, with
    the committed ones; print a line each and return 0 when all match, else 1."""
    different: list[str] = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        out_dir = Path(tmp)
        build_into(out_dir)
        for rel in rel_paths:
            old, fresh = committed / rel, out_dir / rel
            same = old.exists() and old.read_bytes() == fresh.read_bytes()
            print(f"{rel}: {'identical' if same else 'DIFFERENT'}")
            if not same:
                different.append(rel)
    if not manifest_path.exists():
        print("manifest.json: missing")
        different.append("manifest.json")
    elif json.loads(manifest_path.read_text()) != current_manifest():
        print("manifest.json: DIFFERENT from the committed files")
        different.append("manifest.json")
    else:
        print("manifest.json: matches")
    if different:
        print(f"{len(different)} difference(s)")
        return 1
    print("all images byte-identical")
    return 0


def check() -> int:
    """Rebuild into a scratch directory and compare with the committed images."""
    return compare_rebuild("kprobe-corpus-", CORPUS, [i.rel_path for i in images()], build,
                           MANIFEST, manifest)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary directory and compare with the committed images",
    )
    opts = parser.parse_args(argv)
    if opts.check:
        return check()
    build(CORPUS)
    MANIFEST.write_text(json.dumps(manifest(), indent=2, sort_keys=True) + "\n")
    for image in images():
        size = (CORPUS / image.rel_path).stat().st_size
        print(f"{image.rel_path}: {size} bytes")
    print(f"wrote {MANIFEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
