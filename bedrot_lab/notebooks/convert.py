"""``bedrot-lab convert NOTEBOOK --to-plugin``: a plugin module and its spec, written from a notebook's
code cells and its parameters cell, as a starting point for the analyst to edit."""

from __future__ import annotations

import ast
import difflib
import importlib.metadata
import io
import json
import math
import re
import sys
import tokenize
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import atomic_write
from ..plugin_check import READERS
from ..scaffold import FIRST_VERSION, RESERVED, PluginNames, ScaffoldError, plugin_names
from .errors import NotebookError
from .parameters import notebook_params

if TYPE_CHECKING:
    from ..experiments import Param
    from ..lab import Lab

#: what the lines the converter comments out start with, so that they can be searched for
MARK = "convert:"
#: names the generated module defines or imports itself: a notebook import of one stays in the function
MODULE_NAMES = RESERVED | {"Param", "__version__"}
INDENT = "    "
#: the spec's purpose when the notebook has no markdown cell to take it from
PURPOSE = "The question this experiment answers, and the decision it feeds (MLflow shows it with every run)."


@dataclass
class Conversion:
    """What :func:`convert_notebook` wrote, and what it found in the notebook."""

    names: PluginNames
    notebook: Path
    plugin: Path
    spec: Path
    params: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    #: IPython lines (magics, shell commands, help) commented out
    commented: int = 0
    #: the files that were there before and were replaced (``force``)
    replaced: list[Path] = field(default_factory=list)
    #: the commands to run next, in order
    next: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.names.name, "plugin": self.names.identifier, "notebook": str(self.notebook),
                "files": [str(self.plugin), str(self.spec)], "replaced": [str(path) for path in self.replaced],
                "params": self.params, "datasets": self.datasets, "commented_lines": self.commented,
                "next": self.next}


def convert_notebook(lab: Lab, notebook: Path, *, name: str | None = None, plugins_dir: Path | None = None,
                     specs_dir: Path | None = None, force: bool = False) -> Conversion:
    """Write notebook ``notebook`` as a plugin module ``<plugins_dir>/<module>.py`` and a spec
    ``<specs_dir>/<name>.toml`` (by default the lake's plugins folder and specs folder). ``name`` is the
    experiment's, by default the notebook's file name with hyphens. Refused, with nothing written, when
    the notebook cannot be converted (:class:`NotebookError` naming the cell), when the name is taken by
    another plugin's experiment, or when a file is there and ``force`` is not given."""
    settings = lab.settings
    names = experiment_names(notebook, name)
    plugins_dir = plugins_dir or (settings.plugin_paths[0] if settings.plugin_paths else None)
    specs_dir = specs_dir or settings.specs_dir
    if plugins_dir is None or specs_dir is None:
        raise ScaffoldError(f"{settings.config_file}: the lake has no plugins folder ([plugins] paths) or no specs "
                            "folder; set them, or give --plugins-dir and --specs-dir")
    plugin = plugins_dir / f"{names.identifier}.py"
    spec = specs_dir / f"{names.name}.toml"
    for entry_point in importlib.metadata.entry_points(group="bedrot_lab", name=names.identifier):
        raise ScaffoldError(f"an installed package already has a plugin named {names.identifier!r} "
                            f"({entry_point.value}); choose another name with --name")
    if (plugins_dir / names.identifier).exists():
        raise ScaffoldError(f"{plugins_dir / names.identifier} already exists (a plugin package of that name); "
                            "nothing was written: choose another --name")
    existing = [path for path in (plugin, spec) if path.exists() or path.is_symlink()]
    if existing and not force:
        raise ScaffoldError(f"{existing[0]} already exists; nothing was written: convert with --force to replace "
                            "it, or choose another --name")
    _check_experiment_free(lab, names, plugin, force)

    shown = _shown(notebook, settings.root)
    converted = NotebookSource.read(notebook)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    plugin_text = converted.plugin_module(names, shown, when, spec_shown=_shown(spec, settings.root))
    spec_text = converted.spec(names, shown, when, spec_shown=_shown(spec, settings.root))
    for path, text in ((plugin, plugin_text), (spec, spec_text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode("utf-8"))
    return Conversion(names, notebook, plugin, spec, list(converted.params), converted.datasets,
                      converted.commented, existing, [
                          f"bedrot-lab plugins check {names.identifier}",
                          f"bedrot-lab run {_shown(spec, settings.root)}",
                      ])


def experiment_names(notebook: Path, name: str | None) -> PluginNames:
    """The names of the plugin converted from ``notebook``: from ``name``, or from the notebook's
    file name (``distrokid_staging2curated.ipynb`` gives experiment ``distrokid-staging2curated``)."""
    if name is not None:
        return plugin_names(name)
    derived = re.sub(r"[^a-z0-9]+", "-", notebook.stem.lower()).strip("-")
    try:
        return plugin_names(derived)
    except ScaffoldError as exc:
        raise ScaffoldError(f"{notebook.name}: no experiment name can be made from its file name ({exc}); "
                            "give one with --name") from None


def _check_experiment_free(lab: Lab, names: PluginNames, plugin: Path, force: bool) -> None:
    """Refuse a name that another plugin gives an experiment: the plugin being replaced (``force``) may."""
    owner = lab.experiments.get(names.name)
    if owner is not None and force and owner.plugin == names.identifier and plugin.exists():
        return
    if owner is not None or names.name in lab.conflicts:
        by = f" by plugin {owner.plugin!r}" if owner is not None else ""
        raise ScaffoldError(f"an experiment named {names.name!r} is already registered{by}; choose another --name")


@dataclass
class CodeCell:
    """A code cell of the notebook, its IPython lines commented out."""

    #: the cell's position in the notebook, counted from 1, markdown cells included (as run failures count)
    number: int
    source: str
    tree: ast.Module
    parameters: bool = False


@dataclass
class NotebookSource:
    """A notebook read for conversion: its cells as Python, its params, and what its code uses."""

    path: Path
    #: code cells, and markdown or raw cells as ``(number, kind, text)``
    cells: list[CodeCell | tuple[int, str, str]]
    params: dict[str, Param]
    #: the first markdown cell: the experiment's docstring and the spec's purpose
    about: str = ""
    commented: int = 0
    datasets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> NotebookSource:
        """Read notebook ``path``; a cell that is not Python once its IPython lines are commented out
        is a :class:`NotebookError` naming it."""
        import nbformat

        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception as exc:  # not JSON, not a notebook, unreadable: nbformat raises each its own way
            raise NotebookError(f"{path}: cannot read it as a notebook ({_one_line(exc)})") from None
        cells: list[CodeCell | tuple[int, str, str]] = []
        commented = 0
        parameters_found = False
        about = ""
        # papermill's own cell, in a notebook it executed, is not the analyst's: neither converted nor counted
        written = [cell for cell in notebook.cells if "injected-parameters" not in cell.get("metadata", {}).get("tags", [])]
        for number, cell in enumerate(written, 1):
            tags = cell.get("metadata", {}).get("tags", [])
            if cell.cell_type != "code":
                if cell.cell_type == "markdown" and not about and cell.source.strip():
                    about = cell.source.strip()
                    continue
                cells.append((number, cell.cell_type, cell.source))
                continue
            if not cell.source.strip():
                continue
            source, count = comment_ipython(cell.source)
            commented += count
            try:
                tree = ast.parse(source)
            except SyntaxError as exc:
                raise NotebookError(f"{path}: cell {number} is not valid Python ({exc.msg}, line {exc.lineno} of "
                                    "the cell); fix it in the notebook and convert again") from None
            is_parameters = "parameters" in tags and not parameters_found
            parameters_found = parameters_found or is_parameters
            cells.append(CodeCell(number, source, tree, is_parameters))
        return cls(path, cells, notebook_params(path) if parameters_found else {}, about, commented)

    def plugin_module(self, names: PluginNames, shown: str, when: str, spec_shown: str) -> str:
        """The plugin module's source."""
        body = _Body(self, names)
        for cell in self.cells:
            if isinstance(cell, CodeCell):
                body.add_code(cell)
            else:
                body.add_text(*cell)
        self.datasets, self.metrics = body.datasets, body.metrics
        title, details = _summary(self.about) if self.about else (
            f"Converted from notebook {Path(shown).name}: say here which question it answers.", "")
        docstring = title + (f"\n\n{details}" if details else "")
        lines = [
            f"# Generated by `bedrot-lab convert --to-plugin` from notebook {_flat(shown)}",
            f"# on {when}, as a starting point to edit. Check before relying on it:",
            "#   - the params (types, defaults, help) below, and the spec " + _flat(spec_shown) + ";",
            f'#   - the lines marked "{MARK}" (IPython magics and shell commands, commented out: a plugin',
            "#     is plain Python);",
            "#   - files read by path (pd.read_csv(...)): read them through the catalog, ctx.load(NAME),",
            "#     so that each run records its inputs;",
            "#   - the metrics: logged with ctx.log_metric, named by docs/plugins.md's rules.",
            f"# Then: bedrot-lab plugins check {names.identifier}",
            _docstring(f"Experiment {names.name}, converted from notebook {shown}.", ""),
            "",
            "from __future__ import annotations",
            "",
        ]
        if body.futures:
            lines[-1:] = [*body.futures, ""]
        if body.module_imports:
            lines += [*body.module_imports, ""]
        lines += ["from bedrot_lab import Param, experiment, hookimpl" if self.params else
                  "from bedrot_lab import experiment, hookimpl", "", f'__version__ = "{FIRST_VERSION}"', "", ""]
        lines += ["@experiment(", f"{INDENT}{_python(names.name)},"]
        if body.datasets:
            lines.append(f"{INDENT}datasets=[{', '.join(map(_python, body.datasets))}],")
        if self.params:
            lines.append(f"{INDENT}params={{")
            lines += [f"{INDENT * 2}{_python(key)}: {_param(param)}," for key, param in self.params.items()]
            lines.append(f"{INDENT}}},")
        if body.metrics:
            lines.append(f"{INDENT}# the metrics the notebook logs: keep the ones that answer the question, "
                         "most important first")
            lines.append(f"{INDENT}headline=[{', '.join(map(_python, body.metrics))}],")
        lines += [")", f"def {names.identifier}(ctx):", _docstring(docstring, INDENT)]
        if body.function_imports:
            lines += [f"{INDENT}# imported when the experiment runs, not when the plugin loads (every bedrot-lab "
                      "command loads the plugins)", *(INDENT + line for line in body.function_imports)]
        first_body_line = len(lines) + 1
        lines += body.lines
        lines += ["", "", "@hookimpl", "def register_experiments(register):", f"{INDENT}register({names.identifier})",
                  ""]
        source = "\n".join(lines)
        try:
            compile(source, f"{names.identifier}.py", "exec", dont_inherit=True)
        except SyntaxError as exc:
            number = body.cell_of(exc.lineno - first_body_line if exc.lineno else -1)
            where = f"cell {number}" if number else "the converted code"
            raise NotebookError(f"{self.path}: {where} cannot run inside the experiment function ({exc.msg}); "
                                "change it in the notebook and convert again") from None
        return source

    def spec(self, names: PluginNames, shown: str, when: str, spec_shown: str) -> str:
        """The spec's source: the experiment, a purpose to edit, and the params' defaults."""
        purpose = "\n\n".join(part for part in _summary(self.about) if part) if self.about else PURPOSE
        lines = [
            f"# bedrot-lab run {_flat(spec_shown)}",
            f"# written by `bedrot-lab convert` from notebook {_flat(shown)} on {when}:",
            "# say what the experiment is for (purpose) and how it answers (methodology)",
            f"experiment = {_toml(names.name)}",
            f"purpose = {_toml(purpose)}",
            f"methodology = {_toml(f'As notebook {shown} does: say how the answer is computed.')}",
        ]
        if self.params:
            lines += ["", "[params]"]
            for key, param in self.params.items():
                if param.default is None:
                    lines.append(f"# {_toml_key(key)} = ...  (the notebook's default is not a plain value: the "
                                 "experiment uses it unless a value is given)")
                else:
                    lines.append(f"{_toml_key(key)} = {_toml(param.default)}")
        return "\n".join(lines) + "\n"


class _Body:
    """The experiment function's body, built cell by cell, and what the cells import and read."""

    def __init__(self, notebook: NotebookSource, names: PluginNames):
        self.params = notebook.params
        self.names = names
        self.lines: list[str] = []
        #: for each line of :attr:`lines`, the notebook cell it comes from (0 for the converter's own)
        self.origins: list[int] = []
        self.futures: list[str] = []
        self.module_imports: list[str] = []
        self.function_imports: list[str] = []
        #: the names the notebook gives its run context (``ctx = notebook_context()``)
        self.contexts = {"ctx"}
        #: the params the parameters cell's lines read from ctx.params
        self.read: set[str] = set()
        #: names the notebook's code assigns: an import of one stays in the function, where the name is local
        self.assigned = {name for cell in notebook.cells if isinstance(cell, CodeCell) for name in _bound(cell.tree)}
        self.datasets: list[str] = []
        self.metrics: list[str] = []

    def cell_of(self, index: int) -> int:
        """The cell that line ``index`` of the body comes from, or 0."""
        return self.origins[index] if 0 <= index < len(self.origins) else 0

    def _extend(self, lines: list[str], cell: int) -> None:
        self.lines += lines
        self.origins += [cell] * len(lines)

    def add_text(self, number: int, kind: str, text: str) -> None:
        """A markdown cell (or a raw one) as comments."""
        lines = text.strip().splitlines()
        if kind != "markdown":
            lines = [f"({kind} cell {number})", *lines]
        if lines:
            self._extend(["", *(f"{INDENT}# {line}".rstrip() for line in lines)], 0)

    def add_code(self, cell: CodeCell) -> None:
        """A code cell: its imports hoisted, its context creation dropped, its params read from ctx."""
        lines = _lines(cell.source)
        edits: dict[int, tuple[int, list[str]]] = {}  # first line (0-based) -> (last line + 1, new lines)
        for statement in _whole_line_statements(cell.tree):
            new = self._edit(statement, lines, cell.parameters)
            if new is not None:
                edits[statement.lineno - 1] = (statement.end_lineno, new)
        kept: list[str] = []
        index = 0
        while index < len(lines):
            if index in edits:
                index, new = edits[index]
                kept += new
            else:
                kept.append(lines[index])
                index += 1
        if cell.parameters:  # a param assigned on a line it shares: read after the cell, as papermill injects it
            kept += [f"{name} = ctx.params[{_python(name)}]" for name in self.params if name not in self.read]
        self._find_uses(cell.tree)
        while kept and not kept[-1].strip():
            kept.pop()
        while kept and not kept[0].strip():
            kept.pop(0)
        if not kept:
            return
        label = ": the parameters (-P NAME=VALUE, or the spec's [params])" if cell.parameters else ""
        self._extend(["", f"{INDENT}# -- cell {cell.number}{label}"], 0)
        self._extend(_indented("\n".join(kept)), cell.number)

    def _edit(self, statement: ast.stmt, lines: list[str], parameters: bool) -> list[str] | None:
        """What replaces ``statement`` in the function (an empty list drops it), or None to keep it."""
        text = "\n".join(lines[statement.lineno - 1:statement.end_lineno])
        if parameters and (name := _assigned_name(statement)) in self.params:
            self.read.add(name)
            read = [f"{name} = ctx.params[{_python(name)}]"]
            if self.params[name].default is None and getattr(statement, "value", None) is not None:
                fallback = ast.get_source_segment("\n".join(lines), statement.value) or "None"
                read += [f"if {name} is None:  # no value given: the notebook's own default", f"{INDENT}{name} = "
                         f"{fallback}"]
            return read
        if _creates_context(statement):
            name = _assigned_name(statement)
            if name is None or name == "ctx":
                return []
            self.contexts.add(name)
            return [f"{name} = ctx"]
        if isinstance(statement, ast.ImportFrom) and statement.module == "bedrot_lab" and statement.level == 0:
            kept = [alias for alias in statement.names if alias.name != "notebook_context"]
            if not kept:
                return []
            if len(kept) < len(statement.names):
                statement = ast.ImportFrom("bedrot_lab", kept, 0)
                text = ast.unparse(statement)
        if isinstance(statement, ast.Import | ast.ImportFrom) and not getattr(statement, "level", 0):
            return [] if self._hoist(statement, text) else [text]
        return None

    def _hoist(self, statement: ast.Import | ast.ImportFrom, text: str) -> bool:
        """Put an import at the module's top (the standard library and bedrot_lab, which load fast) or
        at the function's (the rest: loading a plugin must stay fast for every command); False when
        it must stay in place."""
        modules = [statement.module or ""] if isinstance(statement, ast.ImportFrom) else [
            alias.name for alias in statement.names]
        bound = {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
        if modules == ["__future__"]:
            features = [alias.name for alias in statement.names if alias.name != "annotations"]
            if features:
                self._add(self.futures, f"from __future__ import {', '.join(features)}")
            return True
        if bound & self.assigned:
            return False  # the name is assigned too: the import stays where it is, in the order the notebook ran
        light = all(module.split(".")[0] in sys.stdlib_module_names or module.split(".")[0] == "bedrot_lab"
                    for module in modules)
        clash = bound & (MODULE_NAMES | {self.names.identifier})
        self._add(self.module_imports if light and not clash else self.function_imports, text)
        return True

    @staticmethod
    def _add(imports: list[str], text: str) -> None:
        if text not in imports:
            imports.append(text)

    def _find_uses(self, tree: ast.Module) -> None:
        """The data sets the cell reads by a literal name, and the metrics it logs by one."""
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in self.contexts):
                continue
            method, first = node.func.attr, _literal(node.args[0]) if node.args else None
            if method in READERS:
                named = first if first is not None else next(
                    (_literal(k.value) for k in node.keywords if k.arg == "name"), None)
                if isinstance(named, str):
                    self._add(self.datasets, named)
            elif method == "log_metric" and isinstance(first, str):
                self._add(self.metrics, first)
            elif method == "log_metrics" and node.args and isinstance(node.args[0], ast.Dict):
                for key in node.args[0].keys:
                    if isinstance(_literal(key), str):
                        self._add(self.metrics, _literal(key))


def comment_ipython(source: str) -> tuple[str, int]:
    """``source`` with its IPython lines (magics, shell commands, help) commented out, each run of
    them under a note saying why, and how many lines were commented out. IPython's own transformer
    finds them, as IPython would run the cell."""
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(source)
    original, transformed = _lines(source), _lines(python)
    if original == transformed:
        return source, 0
    if python.lstrip().startswith("get_ipython().run_cell_magic("):
        lines = _commented(original, f"an IPython cell magic ({original[0].strip()}): the whole cell")
        return "\n".join(lines) + "\n", len(original)
    kept: list[str] = []
    count = 0
    for operation, start, end, new_start, new_end in difflib.SequenceMatcher(
            None, original, transformed, autojunk=False).get_opcodes():
        new = transformed[new_start:new_end]
        if operation == "equal":
            kept += original[start:end]
        elif any("get_ipython()" in line for line in new):
            kept += _commented(original[start:end], _why(new))
            count += end - start
        else:
            kept += new  # IPython's clean-up of a pasted prompt (">>> "): the Python it would run
    return "\n".join(kept) + "\n", count


def _why(transformed: list[str]) -> str:
    """Why the lines that IPython turned into ``transformed`` cannot stay."""
    text = "\n".join(transformed)
    if ".system(" in text or ".getoutput(" in text:
        return "a shell command; a plugin runs none: install packages into the lab's environment"
    if re.search(r"run_line_magic\('(pinfo2?|psearch)'", text):
        return "IPython help"
    return "an IPython magic, not Python"


def _commented(lines: list[str], why: str) -> list[str]:
    """``lines`` as comments under a note; an indented block keeps a ``pass`` so that it stays a block."""
    indent = re.match(r"\s*", next((line for line in lines if line.strip()), "")).group()
    note = f"{indent}pass  # {MARK} {why}" if indent else f"{indent}# {MARK} {why}"
    return [note, *(f"{indent}# {line[len(indent):] if line.startswith(indent) else line.lstrip()}".rstrip()
                    for line in lines)]


def _whole_line_statements(tree: ast.Module) -> list[ast.stmt]:
    """The cell's top-level statements that have their lines to themselves (not ``a = 1; b = 2``)."""
    statements = tree.body
    alone = []
    for index, statement in enumerate(statements):
        before = statements[index - 1].end_lineno if index else 0
        after = statements[index + 1].lineno if index + 1 < len(statements) else math.inf
        if before < statement.lineno and statement.end_lineno < after:
            alone.append(statement)
    return alone


def _bound(tree: ast.AST) -> set[str]:
    """The names ``tree`` binds other than by importing: assignments, loops, functions, classes."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def _assigned_name(statement: ast.stmt) -> str | None:
    """The name ``statement`` assigns, when it assigns one plain name."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target = statement.targets[0]
    elif isinstance(statement, ast.AnnAssign):
        target = statement.target
    else:
        return None
    return target.id if isinstance(target, ast.Name) else None


def _creates_context(statement: ast.stmt) -> bool:
    """Whether ``statement`` is ``ctx = notebook_context(...)`` (or the call alone)."""
    value = getattr(statement, "value", None)
    if not isinstance(statement, ast.Assign | ast.AnnAssign | ast.Expr) or not isinstance(value, ast.Call):
        return False
    function = value.func
    called = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
    return called == "notebook_context"


def _indented(text: str) -> list[str]:
    """``text`` indented into the function body, leaving alone the lines that continue a string
    (indenting them would change the string)."""
    lines = _lines(text)
    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass  # the compile of the whole module reports what is wrong
    return [line if number in inside else (INDENT + line).rstrip() for number, line in enumerate(lines, 1)]


def _lines(text: str) -> list[str]:
    """The lines of ``text`` as Python counts them (``str.splitlines`` also breaks at characters that
    Python keeps inside a line, such as a form feed)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _summary(markdown: str) -> tuple[str, str]:
    """A markdown cell's first heading (or first paragraph) as one line, and the rest of it."""
    lines = markdown.strip().splitlines()
    if lines[0].startswith("#"):
        return lines[0].lstrip("#").strip(), "\n".join(lines[1:]).strip()
    end = next((index for index, line in enumerate(lines) if not line.strip()), len(lines))
    return " ".join(line.strip() for line in lines[:end]), "\n".join(lines[end:]).strip()


def _docstring(text: str, indent: str) -> str:
    """``text`` as a docstring at ``indent``."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    lines = text.splitlines() or [""]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""'
    rest = "\n".join((indent + line).rstrip() for line in lines[1:])
    return f'{indent}"""{lines[0]}\n{rest}\n{indent}"""'


def _param(param: Param) -> str:
    """``Param(int, 10, "help")``, as the module declares it."""
    help_text = f", {_python(param.help)}" if param.help else ""
    return f"Param({param.type.__name__}, {_python(param.default)}{help_text})"


def _python(value: Any) -> str:
    """``value`` (a str, int, float, bool or None) as a Python literal, strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return repr(value)


def _toml(value: Any) -> str:
    """``value`` (a str, int, float or bool) as a TOML value; a text of several lines in triple quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).replace("infinity", "inf")
    if isinstance(value, int):
        return str(value)
    if "\n" not in value:
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"""\n{escaped}"""'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _flat(text: str) -> str:
    """``text`` on one line (a path in a comment)."""
    return " ".join(text.splitlines())


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (the lake) when inside it, else absolute."""
    resolved = path.resolve()
    base = base.resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)
