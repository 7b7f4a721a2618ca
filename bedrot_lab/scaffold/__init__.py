"""New plugins from templates: an installable package, or a file of a lake's ``plugins/`` folder and its spec."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import keyword
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

from ..errors import UsageError

#: what a plugin's name may be: lower-case words of letters and digits, joined by hyphens
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
DISTRIBUTION_PREFIX = "bedrot-lab-"
MODULE_PREFIX = "bedrot_lab_"
#: names the plugin's module uses for itself: an experiment function of one of them would hide it
RESERVED = frozenset({"experiment", "hookimpl", "register_experiments", "annotations"})
#: the version a new plugin starts at
FIRST_VERSION = "0.1.0"


class ScaffoldError(UsageError):
    """A plugin name that cannot be used, or a file that is already there."""


@dataclass(frozen=True)
class PluginNames:
    """Every name of one new plugin, derived from the name the author gave."""

    #: the experiment's name, the spec's and the package folder's: ``royalty-forecast``
    name: str

    @property
    def identifier(self) -> str:
        """The plugin's name (entry point or local file) and the experiment function's: ``royalty_forecast``."""
        return self.name.replace("-", "_")

    @property
    def distribution(self) -> str:
        """What ``pip`` installs: ``bedrot-lab-royalty-forecast``."""
        return DISTRIBUTION_PREFIX + self.name

    @property
    def module(self) -> str:
        """The installed package's module: ``bedrot_lab_royalty_forecast``."""
        return MODULE_PREFIX + self.identifier

    @property
    def title(self) -> str:
        """The name for people: ``Royalty forecast``."""
        return self.name.replace("-", " ").capitalize()

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "plugin": self.identifier, "experiment": self.name,
                "distribution": self.distribution, "module": self.module}


def plugin_names(raw: str) -> PluginNames:
    """The names of a new plugin called ``raw`` (``royalty-forecast``; underscores are taken as
    hyphens, and a ``bedrot-lab-`` in front is dropped), or a :class:`ScaffoldError` saying
    what a name must be."""
    name = raw.replace("_", "-")
    if name.startswith(DISTRIBUTION_PREFIX):
        name = name[len(DISTRIBUTION_PREFIX):]
    if not NAME.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
        suggestion = re.sub(r"^[0-9-]+", "", suggestion)
        hint = f", such as {suggestion!r}" if suggestion and NAME.fullmatch(suggestion) else ", such as 'royalty-forecast'"
        raise ScaffoldError(f"{raw!r} is not a plugin name: use lower-case letters, digits and hyphens, "
                            f"starting with a letter{hint}")
    names = PluginNames(name)
    if keyword.iskeyword(names.identifier) or names.identifier in RESERVED:
        raise ScaffoldError(f"{raw!r} cannot be a plugin name: {names.identifier!r} is a name Python or the "
                            "plugin's module already uses; add a word, such as "
                            f"'{name}-report'")
    return names


@dataclass
class Scaffold:
    """What :func:`new_package` or :func:`new_local_plugin` wrote."""

    kind: str  # "package" or "local"
    names: PluginNames
    #: the package's folder, or the lake's root
    root: Path
    files: list[Path] = field(default_factory=list)
    #: the commands to run next, in order
    next: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.names.to_dict(), "root": str(self.root),
                "files": [str(path) for path in self.files], "next": self.next}


def render(template: str, names: PluginNames, **extra: str) -> str:
    """The package-data template ``templates/<template>.tmpl``, filled in with ``names`` and ``extra``."""
    from .. import __version__

    text = (files(__package__) / "templates" / f"{template}.tmpl").read_text(encoding="utf-8")
    return Template(text).substitute(
        name=names.name, slug=names.name, identifier=names.identifier, distribution=names.distribution,
        module=names.module, title=names.title, lab_version=__version__, **extra)


def new_package(names: PluginNames, parent: Path) -> Scaffold:
    """Write an installable plugin package into ``parent/bedrot-lab-NAME/``: its pyproject (the
    ``bedrot_lab`` entry point), the module with the example experiment, a test, README and
    .gitignore. Refused (:class:`ScaffoldError`, nothing written) when the folder exists, or
    when the module, the distribution or the plugin name is taken by an installed package."""
    check_not_installed(names)
    root = parent / names.distribution
    contents = {
        root / "pyproject.toml": render("pyproject.toml", names),
        root / f"{names.module}.py": render("plugin.py", names, version_block=""),
        root / "tests" / f"test_{names.identifier}.py": render("test_plugin.py", names),
        root / "README.md": render("README.md", names),
        root / ".gitignore": render("gitignore", names),
    }
    if root.exists() or root.is_symlink():
        raise ScaffoldError(f"{root} already exists; nothing was written: choose another NAME, or another "
                            "folder with --path")
    write_new(contents)
    shown = _shown(root)
    installable = shown if Path(shown).is_absolute() else f"./{shown}"
    return Scaffold("package", names, root, list(contents), [
        f"pip install -e '{installable}[test]'",
        f"cd {shown} && pytest",
        f"bedrot-lab plugins check {names.identifier}",
        "bedrot-lab experiments list",
    ])


def new_local_plugin(names: PluginNames, lake: Path, plugin_folder: Path, specs_folder: Path) -> Scaffold:
    """Write the example experiment as ``plugin_folder/NAME.py`` (a plugin of the lake, nothing
    to install) and its spec as ``specs_folder/NAME.toml``. Refused (:class:`ScaffoldError`,
    nothing written) when either is there, or a plugin package of that name is."""
    check_not_installed(names, package=False)
    plugin = plugin_folder / f"{names.identifier}.py"
    spec = specs_folder / f"{names.name}.toml"
    if (plugin_folder / names.identifier).exists():
        raise ScaffoldError(f"{plugin_folder / names.identifier} already exists (a plugin package of that "
                            "name); nothing was written: choose another NAME")
    contents = {
        plugin: render("plugin.py", names, version_block=f'\n__version__ = "{FIRST_VERSION}"'),
        spec: render("spec.toml", names),
    }
    write_new(contents)
    return Scaffold("local", names, lake, list(contents), [
        f"bedrot-lab plugins check {names.identifier}",
        f"bedrot-lab run {_shown(spec, lake)}",
    ])


def check_not_installed(names: PluginNames, *, package: bool = True) -> None:
    """Refuse a name whose plugin name (or, for a package, whose module or distribution) an
    installed package already has: the new plugin would clash with it when loaded."""
    for entry_point in importlib.metadata.entry_points(group="bedrot_lab", name=names.identifier):
        raise ScaffoldError(f"an installed package already has a plugin named {names.identifier!r} "
                            f"({entry_point.value}); choose another NAME")
    if not package:
        return
    try:
        importlib.metadata.distribution(names.distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        raise ScaffoldError(f"a package named {names.distribution!r} is already installed "
                            f"(pip show {names.distribution}); choose another NAME")
    if importlib.util.find_spec(names.module) is not None:
        raise ScaffoldError(f"a module named {names.module!r} can already be imported; choose another NAME")


def write_new(contents: dict[Path, str]) -> None:
    """Write each file of ``contents``, none of which may exist: checked for all before the
    first is written, and each opened in exclusive mode."""
    for path in contents:
        if path.exists() or path.is_symlink():
            raise ScaffoldError(f"{path} already exists; nothing was written: choose another NAME")
    for path, text in contents.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:
            out.write(text)


def _shown(path: Path, base: Path | None = None) -> str:
    """``path`` relative to ``base`` (the current folder by default) when inside it, else as it is."""
    base = (base or Path.cwd()).resolve()
    resolved = path.resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) and resolved != base else str(path)
