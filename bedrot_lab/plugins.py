"""The plugin manager: built-ins, installed entry points and the lake's ``plugins/`` folder."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import BedrotLabError
from .secrets import scrub

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "bedrot_lab"
LOCAL_PACKAGE = "bedrot_lab_local"
#: the name of a lake plugin whose file name is taken by a different installed plugin: ``lake:<name>``
LAKE_PREFIX = "lake:"

#: the built-in plugins, name -> module: ordinary plugins, each a feature's entry into the hooks
DEFAULT_PLUGINS: dict[str, str] = {
    "datasets": "bedrot_lab.builtin.datasets",
    "run_tags": "bedrot_lab.builtin.run_tags",
    "sandbox": "bedrot_lab.sandbox.hooks",
    "violation_sinks": "bedrot_lab.sandbox.violation_sinks",
    "daemon": "bedrot_lab.daemon.hooks",
    "server": "bedrot_lab.server.hooks",
    "notebooks": "bedrot_lab.notebooks.hooks",
}


class PluginError(BedrotLabError):
    """A plugin that could not be loaded (raised only in strict mode)."""


class HookCallError(BedrotLabError, TypeError):
    """A hook called with positional arguments: pluggy takes them by name only."""


@dataclass(frozen=True)
class Problem:
    """One mistake in a plugin, as ``bedrot-lab plugins check`` reports it: ``message`` says
    what is wrong and how to fix it; ``where`` is ``file:line`` when known."""

    plugin: str
    kind: str
    message: str
    where: str = ""

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.where}): {self.message}" if self.where else \
            f"plugin {self.plugin!r}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class PluginInfo:
    """What ``plugins list`` shows about one plugin."""

    name: str
    source: str  # "builtin", "entry point" or "path"
    location: str
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    error: str = ""
    disabled: bool = False

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else "failed" if self.error else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "status": self.status}


@dataclass(frozen=True)
class PluginCall:
    """One plugin's implementation of a hook, called on its own: what it returned or raised."""

    plugin: str
    hook: str
    result: Any = None
    error: BaseException | None = None

    def __str__(self) -> str:
        outcome = "" if self.error is None else f" raised {describe(self.error)}"
        return f"{self.hook} of plugin {self.plugin!r}{outcome}"


class PluginHost:
    """One process's plugin manager and what it learned loading the plugins."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: every problem found, plugin by plugin (what ``plugins check`` reports)
        self.problems: dict[str, list[Problem]] = {}
        self.strict = os.environ.get("BEDROT_LAB_STRICT_PLUGINS") == "1"
        #: record problems without logging or raising them (``plugins check`` prints them itself)
        self.checking = False
        self._hooks = KeywordHooks(self)
        if os.environ.get("BEDROT_LAB_TRACE_PLUGINS") == "1":
            # every argument is printed, the lake's settings too: a password in a URL there is masked
            self.pm.trace.root.setwriter(lambda message: log.warning("hook %s", scrub(message.rstrip())[0]))
            self.pm.enable_tracing()

    @property
    def hook(self) -> Any:
        """``pm.hook``, except that a hook called with positional arguments raises a
        :class:`HookCallError` saying where and how to call it."""
        return self._hooks

    @property
    def errors(self) -> list[PluginInfo]:
        return [info for info in self.infos.values() if info.error]

    def load(self, plugin_paths: Iterable[Path] = (), disabled: Iterable[str] = ()) -> PluginHost:
        """Register the built-ins, then entry points, then the ``.py`` files and packages
        in ``plugin_paths``. Broken plugins are recorded (and warned about) by name."""
        allowed = _allow_list()
        for name in disabled:
            self.pm.set_blocked(name)
            self.infos[name] = PluginInfo(name, "", "", disabled=True)
        for name, module_name in DEFAULT_PLUGINS.items():
            self._add(name, "builtin", module_name, lambda m=module_name: importlib.import_module(m))
        installed: dict[str, str] = {}  # entry point name -> its module
        for entry_point in _entry_points():
            if allowed is None or entry_point.name in allowed:
                version = entry_point.dist.version if entry_point.dist else ""
                self._add(entry_point.name, "entry point", entry_point.value, entry_point.load, version)
                installed[entry_point.name] = entry_point.module
        for folder in plugin_paths:
            for path in _local_plugin_files(folder):
                name = path.stem if path.suffix == ".py" else path.name
                if allowed is not None and name not in allowed:
                    continue
                if name in installed:
                    if _same_module(path, installed[name]):
                        continue  # the installed plugin's own file: loaded once, as the entry point
                    name = f"{LAKE_PREFIX}{name}"
                self._add(name, "path", str(path), lambda p=path: _import_local(p))
        return self

    def _add(
        self, name: str, source: str, location: str, loader: Callable[[], Any], version: str = ""
    ) -> None:
        if self.pm.is_blocked(name):
            self.infos[name].source, self.infos[name].location = source, location
            return
        info = PluginInfo(name, source, location, version)
        self.infos[name] = info
        if name in {n for n, _ in self.pm.list_name_plugin()}:
            self._fail(info, f"a plugin named {name!r} is already loaded from elsewhere; rename one")
            return
        try:
            plugin = loader()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._fail(info, import_problem(exc), error=exc, kind="import",
                       where=getattr(exc, "where", "") or _where_raised(exc, location))
            return
        broken: set[str] = set()
        found = hook_problems(self.pm, plugin, broken)
        if self.checking:
            for problem in found:
                self._fail(info, problem.message, kind=problem.kind, where=problem.where)
            # the rest of the plugin is still checked: what it registers, the hooks it calls
            plugin = _without(plugin, broken) if broken else plugin
        elif broken:
            found = [problem for problem in found if problem.kind != "unmarked-hook"]
            more = f" (and {len(found) - 1} more: bedrot-lab plugins check {name})" if len(found) > 1 else ""
            self._fail(info, found[0].message + more, kind=found[0].kind, where=found[0].where)
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(info, describe(exc), error=exc)
            return
        info.version = info.version or _plugin_version(plugin, source)
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or ())

    def _fail(self, info: PluginInfo, problem: str, consequence: str = "not loaded", *,
              error: BaseException | None = None, kind: str = "load", where: str = "") -> None:
        info.error = f"{info.error}; {problem}" if info.error else problem
        self.problems.setdefault(info.name, []).append(Problem(info.name, kind, problem, where or info.location))
        if self.checking:
            return
        message = f"plugin {info.name!r} ({where or info.location}) {consequence}: {problem}"
        if self.strict:
            raise PluginError(message) from error
        log.warning(message, exc_info=error if log.isEnabledFor(logging.DEBUG) else None)

    def problem(self, plugin: str, kind: str, message: str, where: str = "") -> None:
        """Record a problem found outside loading (``plugins check``), without failing the plugin."""
        where = where or self.info(plugin).location
        self.problems.setdefault(plugin, []).append(Problem(plugin, kind, message, where))

    def plugin_of(self, file: str) -> str:
        """The name of the plugin whose file or package folder holds ``file``, or ""."""
        path = Path(file)
        for info in self.infos.values():
            if info.source == "path" and (path == Path(info.location) or Path(info.location) in path.parents):
                return info.name
            if info.source == "entry point":
                plugin = self.pm.get_plugin(info.name)
                if getattr(plugin, "__file__", None) == file:
                    return info.name
        return ""

    def info(self, name: str) -> PluginInfo:
        """What is known of plugin ``name`` (a bare record for one registered by hand)."""
        return self.infos.setdefault(name, PluginInfo(name, "", ""))

    def collect(self, hook_name: str, check: Callable[[Any], None] | None = None) -> list[tuple[PluginInfo, list[Any]]]:
        """Call a ``register_*`` hook once per plugin, each with a ``register`` that runs
        ``check(item)`` and keeps the item; return what each plugin registered, in pluggy's
        call order. A plugin whose call raises (in ``check`` too) contributes nothing, shows
        as failed in ``plugins list`` and is reported by name (an error in strict mode)."""
        registered: list[Any] = []

        def register(*arguments: Any) -> None:
            item = arguments[0] if len(arguments) == 1 else arguments
            if check is not None:
                check(item)
            registered.append(item)

        contributions: list[tuple[PluginInfo, list[Any]]] = []
        # call_each calls a plugin only when the loop reaches it: `registered` is that plugin's
        for call in call_each(getattr(self.hook, hook_name), register=register):
            if call.error is None:
                contributions.append((self.info(call.plugin), registered.copy()))
            else:
                self._fail(self.info(call.plugin), f"{hook_name} raised {describe(call.error)}", "left out",
                           error=call.error, kind="register", where=_where_raised(call.error))
            registered.clear()
        return contributions

    def call_isolated(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``hook_name`` like ``self.hook.<hook_name>(**kwargs)``, except that an
        implementation that raises is logged in one line naming its plugin and left out of
        the results, and the others still run."""
        results: list[Any] = []
        for call in call_each(getattr(self.hook, hook_name), **kwargs):
            if call.error is not None:
                log_failure(call)
            elif call.result is not None:
                results.append(call.result)
        return results


def call_each(caller: pluggy.HookCaller, **kwargs: Any) -> Iterator[PluginCall]:
    """Call each plugin's implementation of a hook on its own, in pluggy's call order, and
    yield a :class:`PluginCall` for it; an exception (``SystemExit`` too, not Ctrl-C) is
    caught and yielded, so the next plugin still runs. Each call goes through the plugin
    manager, with the arguments by name: wrappers, hook-call monitoring and
    ``BEDROT_LAB_TRACE_PLUGINS`` see every one. Lazy: a plugin is called when the
    iteration reaches it."""
    impls = caller.get_hookimpls()
    wrappers = [impl for impl in impls if impl.wrapper or impl.hookwrapper]
    for impl in reversed(impls):
        if impl in wrappers:
            continue
        try:
            # pluggy has no public call of one implementation; this is the path its own subset
            # and historic calls take. firstresult=True: the result is the implementation's own.
            result = caller._hookexec(caller.name, [impl, *wrappers], kwargs, True)
        except (Exception, SystemExit) as error:
            yield PluginCall(impl.plugin_name, caller.name, error=error)
        else:
            yield PluginCall(impl.plugin_name, caller.name, result)


class KeywordHooks:
    """``pm.hook`` whose hooks, called with positional arguments, raise a :class:`HookCallError`
    that names the hook, the caller's file and line, its plugin and the call by name (pluggy's
    own error names none of them)."""

    def __init__(self, host: PluginHost):
        self._host = host

    def __getattr__(self, name: str) -> Any:
        return _KeywordHookCaller(getattr(self._host.pm.hook, name), self._host)


class _KeywordHookCaller:
    """A pluggy ``HookCaller`` that takes keyword arguments only, and says so."""

    __slots__ = ("_caller", "_host")

    def __init__(self, caller: pluggy.HookCaller, host: PluginHost):
        self._caller = caller
        self._host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self._caller, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            frame = sys._getframe(1)
            plugin = self._host.plugin_of(frame.f_code.co_filename)
            by = f" by plugin {plugin!r}" if plugin else ""
            raise HookCallError(
                f"hook {self._caller.name} called with positional arguments{by} at "
                f"{frame.f_code.co_filename}:{frame.f_lineno}; hooks take arguments by name: "
                f"{_by_name(self._caller)}")
        return self._caller(**kwargs)


def _by_name(caller: pluggy.HookCaller) -> str:
    names = caller.spec.argnames if caller.spec else ()
    return f"hook.{caller.name}({', '.join(f'{name}=...' for name in names)})"


def hook_problems(pm: pluggy.PluginManager, plugin: Any, broken: set[str] | None = None) -> list[Problem]:
    """The mistakes in ``plugin``'s hook implementations, found before pluggy registers it:
    a ``@hookimpl`` whose name is no hook (pluggy would register it silently), an argument
    the hook does not have, and a function named like a hook but not marked ``@hookimpl``
    (kind ``unmarked-hook``: pluggy ignores it). Each message suggests the closest name.
    The attributes of the implementations pluggy cannot register are added to ``broken``."""
    broken = set() if broken is None else broken
    specs = {name: caller.spec for name, caller in vars(pm.hook).items()
             if isinstance(caller, pluggy.HookCaller) and caller.spec is not None}
    name = pm.get_name(plugin) or getattr(plugin, "__name__", "")
    problems = []
    for attribute in dir(plugin):
        try:
            opts = pm.parse_hookimpl_opts(plugin, attribute)
        except Exception:  # an attribute whose lookup raises is no hook implementation
            continue
        function = getattr(plugin, attribute, None)
        if opts is None:
            if attribute in specs and inspect.isroutine(function):
                problems.append(Problem(name, "unmarked-hook", (
                    f"function {attribute} is named like a hook but not marked @hookimpl, so it is never "
                    "called; add `@hookimpl` above it (from bedrot_lab import hookimpl)"), _where_defined(function)))
            continue
        hook = opts.get("specname") or attribute
        where = _where_defined(function)
        spec = specs.get(hook)
        if spec is None:
            broken.add(attribute)
            problems.append(Problem(name, "unknown-hook", (
                f"implements unknown hook {hook!r}{_did_you_mean(hook, specs, signature=specs)}; rename the "
                "function (or drop @hookimpl if it is not a hook); `bedrot-lab plugins hooks` lists the hooks"),
                where))
            continue
        accepted = {*spec.argnames, *spec.kwargnames}
        for argument in _required_arguments(function):
            if argument not in accepted:
                broken.add(attribute)
                problems.append(Problem(name, "hook-argument", (
                    f"hook {hook} has no argument {argument!r}{_did_you_mean(argument, spec.argnames)}; "
                    f"its signature is {hook}({', '.join(spec.argnames)}): take any of these, by name"), where))
                break
    return problems


def _without(plugin: Any, attributes: set[str]) -> ModuleType:
    """A stand-in for module ``plugin`` without ``attributes``, for ``plugins check`` to look
    at the rest of a plugin whose broken hook implementations pluggy would refuse."""
    stand_in = ModuleType(getattr(plugin, "__name__", "plugin"))
    for attribute in dir(plugin):
        if attribute not in attributes and attribute != "__name__":
            setattr(stand_in, attribute, getattr(plugin, attribute))
    return stand_in


def _required_arguments(function: Any) -> list[str]:
    """The arguments pluggy passes to ``function``: those without a default."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


def _did_you_mean(word: str, options: Iterable[str], signature: dict[str, Any] | None = None) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    if not close:
        return ""
    if signature is not None:
        return f" (did you mean {close[0]}({', '.join(signature[close[0]].argnames)})?)"
    return f" (did you mean {close[0]!r}?)"


def close_names(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the names of ``options`` close to ``word``, else ""."""
    close = difflib.get_close_matches(word, list(options), n=3)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def duplicate_dataset(name: str, owners: list[PluginInfo]) -> str:
    """The message for data set ``name`` registered by each of ``owners`` (the first one's is used)."""
    named = [f"{info.name!r} ({info.location})" for info in owners]
    return (f"data set {name!r} is registered by more than one plugin: {', '.join(named[:-1])} and {named[-1]}; "
            f"{owners[0].name!r}'s is used; rename one of them")


def _where_defined(function: Any) -> str:
    """``file:line`` where ``function`` is defined, or ""."""
    code = getattr(inspect.unwrap(getattr(function, "__func__", function)), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""


_FRAMEWORK = str(Path(__file__).resolve().parent)


def _where_raised(error: BaseException, location: str = "") -> str:
    """``file:line`` of the plugin's code where ``error`` was raised: the deepest frame in
    ``location`` (a plugin's file or package folder) if any, else the deepest outside
    bedrot-lab and Python's import machinery; "" when the traceback has none."""
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        file = traceback.tb_frame.f_code.co_filename
        if not file.startswith(("<", _FRAMEWORK)) and "importlib" not in file:
            frames.append(f"{file}:{traceback.tb_lineno}")
        traceback = traceback.tb_next
    if location:
        own = [frame for frame in frames if frame.startswith((f"{location}:", f"{location}{os.sep}"))]
        frames = own or frames
    return frames[-1] if frames else ""


def import_problem(error: BaseException) -> str:
    """What a plugin that failed at import did wrong, and what to do about it."""
    if isinstance(error, BedrotLabError):  # raised by bedrot-lab's own checks (@experiment, Param): it teaches
        return str(error)
    if isinstance(error, SystemExit):
        return (f"{describe(error)} (at import); a plugin must not exit: raise an exception in the hook or "
                'experiment instead, or put script code under `if __name__ == "__main__":`')
    if isinstance(error, ModuleNotFoundError) and error.name:
        return (f"{describe(error)}; pip install it, or import it inside the experiment that needs it and "
                f"declare it: @experiment(..., requires={{{error.name!r}: '<what to pip install>'}})")
    return (f"{describe(error)} (at import); fix it, or move the code that can fail into a hook or an "
            "experiment, where a failure is reported and the rest keeps working")


def log_failure(call: PluginCall, context: str = "") -> None:
    """Log a failed :class:`PluginCall` in one line (with its traceback under ``--debug``)."""
    log.error("%s%s", call, context, exc_info=call.error if log.isEnabledFor(logging.DEBUG) else None)


def _allow_list() -> set[str] | None:
    raw = os.environ.get("BEDROT_LAB_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> importlib.metadata.EntryPoints | tuple[()]:
    if os.environ.get("BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD") == "1":
        return ()
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _same_module(path: Path, module: str) -> bool:
    """Whether the lake's plugin ``path`` (a file or a package) is installed module ``module``:
    the same file, or for a single file, a copy with the same bytes."""
    origin = getattr(sys.modules.get(module), "__file__", None)
    if origin is None:  # a disabled or broken entry point: located, not imported
        try:
            spec = importlib.util.find_spec(module)
        except Exception:
            return False
        origin = spec.origin if spec else None
    if not origin:
        return False
    file = path / "__init__.py" if path.is_dir() else path
    try:
        return os.path.samefile(file, origin) or (path.is_file() and file.read_bytes() == Path(origin).read_bytes())
    except OSError:
        return False


def _local_plugin_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if (path.suffix == ".py" and path.is_file()) or (path / "__init__.py").is_file():
            found.append(path)
    return found


def _import_local(path: Path) -> ModuleType:
    """Import a plugin file or package from a lake's plugins folder under ``bedrot_lab_local``."""
    if LOCAL_PACKAGE not in sys.modules:
        package = ModuleType(LOCAL_PACKAGE)
        package.__path__ = []
        sys.modules[LOCAL_PACKAGE] = package
    is_package = path.is_dir()
    name = path.stem if not is_package else path.name
    module_name = f"{LOCAL_PACKAGE}.{name}"
    location = path / "__init__.py" if is_package else path
    spec = importlib.util.spec_from_file_location(
        module_name, location, submodule_search_locations=[str(path)] if is_package else None
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _plugin_version(plugin: Any, source: str) -> str:
    if source == "builtin":
        from . import __version__

        return __version__
    return str(getattr(plugin, "__version__", ""))


def describe(exc: BaseException) -> str:
    """``Type: message`` in one line (just ``Type`` when there is no message)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def make_plugin_host(plugin_paths: Iterable[Path] = (), disabled: Iterable[str] = ()) -> PluginHost:
    """A fresh, loaded :class:`PluginHost` (one per process that needs one)."""
    return PluginHost().load(plugin_paths, disabled)
