"""Reading the bad-input catalogue (``docs/errors.md``) and finding the sites it must cover.

Sites are found in the source by their syntax, so a new one cannot be missed:

- an API site: ``raise E(...)`` where ``E`` is :class:`~kprobe_ref.errors.KprobeError` or a
  subclass, or one of the command line's own bad-input errors (:data:`CLI_ERRORS`);
- a CLI exit site: in a command-line module (:data:`CLI_MODULES`), a ``return N``,
  ``status = N`` or ``SystemExit(N)`` with a nonzero literal ``N``, and each exception class
  an ``except`` clause of ``cli.main`` turns into an exit status.

A site is named by where it is (``module.function``, e.g. ``manager._new_point``) and what
it raises or exits with; an API site also by its message template: the constant text of the
message with each ``{...}`` field replaced by ``{}``.  A catalogue row covers a site when its
``raised at`` names the same place, its error column the same class (or exit status) and,
when the site's message has constant text, its message column the same template (fields
in the row may be named, ``{addr}``: only the text between fields must match).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "errors.md"
SOURCES = (ROOT / "kprobe_ref", ROOT / "models", ROOT / "proofs")
CLI_MODULES = ("tools.cli", "proofs.commands", "proofs.explain", "tools.audit", "tools.demo",
               "tools.workers")
CLI_ERRORS = frozenset({"BadInput", "UsageError"})
FIELD = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class Site:
    """One place that raises a bad-input error or ends the command with a status."""

    file: str
    line: int
    where: str
    error: str
    """The exception class, or ``exit N`` for a CLI exit site."""
    template: str | None

    def matches(self, row: Row) -> bool:
        if row.where != self.where or self.error not in row.errors:
            return False
        return self.template is None or normalize(row.message) == self.template

    def suggestion(self) -> str:
        message = self.template if self.template is not None else "<message>"
        return (f"| <the bad input> | `{self.where}` | `{self.error}` | `{message}` | "
                f"`tests/<file>.py::<test>` |")


@dataclass(frozen=True)
class Row:
    """One row of the catalogue."""

    section: str
    line: int
    input: str
    where: str
    errors: tuple[str, ...]
    message: str
    test: str


def normalize(message: str) -> str:
    """A message template with every field written ``{}`` and spaces collapsed."""
    return " ".join(FIELD.sub("{}", message).split())


def _template(node: ast.expr | None) -> str | None:
    """The message template of the first argument of an error call, or ``None`` when it
    has no constant text (a variable, ``str(exc)``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return normalize(node.value.replace("{", "{{").replace("}", "}}")
                         .replace("{{", "{").replace("}}", "}"))
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            else:
                parts.append("{}")
        text = "".join(parts)
        return normalize(text) if FIELD.sub("", text).strip() else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        if left is not None or right is not None:
            return normalize((left or "{}") + (right or "{}"))
    return None


def _module_name(path: Path) -> str:
    for base in SOURCES:
        if path.is_relative_to(base):
            rel = path.relative_to(base).with_suffix("")
            parts = list(rel.parts)
            prefix = [] if base.name == "kprobe_ref" else [base.name]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join(prefix + parts)
    raise ValueError(path)


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: Path, errors: frozenset[str]) -> None:
        self.path, self.errors = path, errors
        self.module = _module_name(path)
        self.scope: list[str] = []
        self.sites: list[Site] = []

    def _where(self) -> str:
        return ".".join([self.module, *self.scope]) if self.module else ".".join(self.scope)

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _add(self, line: int, error: str, template: str | None) -> None:
        rel = str(self.path.relative_to(ROOT))
        self.sites.append(Site(rel, line, self._where(), error, template))

    def visit_Raise(self, node: ast.Raise) -> None:
        call = node.exc
        if isinstance(call, ast.Call):
            func = call.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else None)
            if name in self.errors:
                arg = call.args[0] if call.args else None
                self._add(node.lineno, name, _template(arg))
            elif name == "SystemExit" and self._cli():
                self._exit(node.lineno, call.args[0] if call.args else None)
        self.generic_visit(node)

    def _cli(self) -> bool:
        return self.module in CLI_MODULES

    def _exit(self, line: int, value: ast.expr | None) -> None:
        if (isinstance(value, ast.Constant) and type(value.value) is int  # not a bool
                and value.value):
            self._add(line, f"exit {value.value}", None)

    def visit_Return(self, node: ast.Return) -> None:
        if self._cli():
            self._exit(node.lineno, node.value)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._cli() and any(isinstance(t, ast.Name) and t.id == "status"
                               for t in node.targets):
            self._exit(node.lineno, node.value)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        if self.module == "tools.cli" and self.scope == ["main"]:
            for handler in node.handlers:
                for name in _handled(handler.type):
                    self._add(handler.lineno, name, None)
        self.generic_visit(node)


def _handled(node: ast.expr | None) -> list[str]:
    if node is None:
        return ["BaseException"]
    if isinstance(node, ast.Tuple):
        return [n for elt in node.elts for n in _handled(elt)]
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


def bad_input_errors() -> frozenset[str]:
    """Names of every ``KprobeError`` class and the command line's bad-input errors."""
    from kprobe_ref import errors

    names = {n for n in dir(errors) if isinstance(getattr(errors, n), type)
             and issubclass(getattr(errors, n), errors.KprobeError)}
    return frozenset(names | CLI_ERRORS)


def find_sites() -> list[Site]:
    """Every API and CLI site of the source tree, in file and line order."""
    errors = bad_input_errors()
    sites: list[Site] = []
    for base in SOURCES:
        for path in sorted(base.rglob("*.py")):
            scanner = _Scanner(path, errors)
            scanner.visit(ast.parse(path.read_text(), str(path)))
            sites.extend(scanner.sites)
    return sites


def _cell(text: str) -> str:
    return text.strip().strip("`").strip()


def read_rows(text: str | None = None) -> list[Row]:
    """The rows of every table in the catalogue (header and separator lines skipped)."""
    text = CATALOGUE.read_text() if text is None else text
    rows, section = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            continue
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip().replace("\\|", "|")
                 for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) != 5 or cells[0] == "input":
            continue
        errors = tuple(_cell(e) for e in cells[2].split(","))
        rows.append(Row(section, number, cells[0], _cell(cells[1]), errors, _cell(cells[3]),
                        _cell(cells[4])))
    return rows


def missing_test(reference: str) -> str | None:
    """Why ``tests/x.py::name[param]`` names no test, or ``None`` when it does."""
    m = re.fullmatch(r"(tests/[\w/]+\.py)::(\w+)(?:\[(.+)\])?", reference)
    if m is None:
        return f"{reference!r} is not of the form tests/<file>.py::<test>[<param>]"
    path = ROOT / m.group(1)
    if not path.exists():
        return f"{m.group(1)} does not exist"
    source = path.read_text()
    if not re.search(rf"^\s*def {m.group(2)}\(", source, re.MULTILINE):
        return f"{m.group(1)} defines no {m.group(2)}"
    if m.group(3) is not None and f'"{m.group(3)}"' not in source:
        return f"{m.group(1)} has no parameter id \"{m.group(3)}\""
    return None
