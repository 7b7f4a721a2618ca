"""Experiments: a function, its typed parameters and the data sets it reads."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

PARAM_TYPES: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool"}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class ParamError(UsageError, ValueError):
    """A parameter that is unknown or cannot be coerced to its declared type."""


class ExperimentError(UsageError, TypeError):
    """An experiment defined wrongly (its function's signature); ``where`` is its ``file:line``."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Param:
    """A typed experiment parameter with a default.

    ``Param(int, 6, "months a listener keeps paying")``; ``choices`` limits the
    values; ``min``/``max`` bound numbers.
    """

    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ParamError(f"{self._spelled()}: the type must be one of str, int, float, bool, "
                             f"not {getattr(self.type, '__name__', self.type)!r}")
        if self.default is not None:
            self._check_default()
            object.__setattr__(self, "default", self.coerce(self.default))

    def _spelled(self) -> str:
        """How the declaration reads: ``param 'top_n' Param(int, 'six')``."""
        extras = "".join(f", {key}={value!r}" for key, value in
                         (("choices", self.choices), ("min", self.min), ("max", self.max)) if value is not None)
        kind = getattr(self.type, "__name__", repr(self.type))
        named = f"param {self.name!r} " if self.name else ""
        return f"{named}Param({kind}, {self.default!r}{extras})"

    def _check_default(self) -> None:
        """Raise a :class:`ParamError` that says how to fix a default of another type than
        declared, outside the choices or out of bounds."""
        kind = PARAM_TYPES[self.type]
        value = self.default
        fits = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value),
            str: isinstance(value, str),
        }[self.type]
        if not fits:
            actual = PARAM_TYPES.get(type(value), type(value).__name__)
            raise ParamError(f"{self._spelled()}: the default {value!r} is not {_a(kind)}; give it as {_a(kind)}"
                             f", or declare the type it is: Param({actual}, {value!r}, ...)")
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamError(f"{self._spelled()}: the default {value!r} is not one of the choices{hint}; "
                             "make the default one of them, or add it to choices")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ParamError(f"{self._spelled()}: the default {value!r} is outside [{self.min}, {self.max}]; "
                             "make the default a value within min and max")

    def coerce(self, value: Any) -> Any:
        """``value`` (a string from the command line, or a TOML value) as this param's type."""
        try:
            result = _coerce(self.type, value)
        except (TypeError, ValueError):
            raise ParamError(
                f"param {self.name!r} must be {PARAM_TYPES[self.type]}, got {value!r}"
            ) from None
        if self.choices is not None and result not in self.choices:
            raise ParamError(f"param {self.name!r} must be one of {list(self.choices)}, got {result!r}")
        if (self.min is not None and result < self.min) or (self.max is not None and result > self.max):
            raise ParamError(f"param {self.name!r} must be within [{self.min}, {self.max}], got {result!r}")
        return result

    def describe(self) -> str:
        text = f"{self.name} ({PARAM_TYPES[self.type]}, default {self.default!r})"
        return f"{text}: {self.help}" if self.help else text


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)
        if math.isnan(number):
            raise ValueError(value)
        return number
    if isinstance(value, (dict, list)):
        raise ValueError(value)
    return str(value)


@dataclass(frozen=True)
class Experiment:
    """A named, parameterised piece of analysis that bedrot-lab runs and tracks.

    Build one with :func:`experiment`. ``func`` is called with a
    :class:`~bedrot_lab.context.RunContext`.
    """

    name: str
    func: Callable[..., Any]
    description: str = ""
    params: Mapping[str, Param] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()
    plugin: str = ""
    #: module the experiment imports -> what to ``pip install`` for it, for optional dependencies
    requires: Mapping[str, str] = field(default_factory=dict)
    #: the metrics that answer the experiment's question, most important first: the columns a
    #: person looks at first (the MLflow runs table, ``runs list``); a sweep's parent ranks by the first
    headline: tuple[str, ...] = ()

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """All params, defaults filled in and values coerced; :class:`ParamError` lists the valid ones."""
        unknown = [key for key in values if key not in self.params]
        if unknown:
            raise ParamError(f"experiment {self.name!r} has no param {unknown[0]!r}; {self.params_help()}")
        resolved = {}
        for name, param in self.params.items():
            if name in values:
                try:
                    resolved[name] = param.coerce(values[name])
                except ParamError as exc:
                    raise ParamError(f"{exc}; {self.params_help()}") from None
            else:
                resolved[name] = param.default
        return resolved

    def params_help(self) -> str:
        if not self.params:
            return "it takes no params"
        return "valid params: " + ", ".join(p.describe() for p in self.params.values())

    @property
    def summary(self) -> str:
        """The first line of the description."""
        return self.description.strip().splitlines()[0] if self.description.strip() else ""

    @property
    def unavailable(self) -> str:
        """Why the experiment cannot run here (a module in ``requires`` is not installed, and
        what to install), or "" when it can."""
        for module, requirement in self.requires.items():
            if not _installed(module):
                return f"it needs {module}, which is not installed: pip install '{requirement}'"
        return ""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that cannot be imported, or a stub in sys.modules
        return False


def experiment(
    name: str | None = None,
    *,
    params: Mapping[str, Param | Any] | None = None,
    datasets: Iterable[str] = (),
    description: str | None = None,
    requires: Mapping[str, str] | None = None,
    headline: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Experiment]:
    """Decorate ``func(ctx)`` to make it an :class:`Experiment`.

    ``name`` defaults to the function name with dashes; ``description`` to its
    docstring. A param given as a plain value is a param of that value's type
    with it as the default. ``requires`` maps each optional module the experiment
    imports to what to ``pip install`` for it (``{"sklearn": "bedrot-lab[analyses]"}``):
    without it, the experiment is listed as unavailable with that command, and not run.
    ``headline`` names the metrics that answer the experiment's question, most important first.

    Example::

        @experiment("revenue-per-stream", datasets=["dk_bank_details"],
                    params={"top_n": Param(int, 10, "stores to chart")})
        def revenue_per_stream(ctx):
            ...
    """

    def wrap(func: Callable[..., Any]) -> Experiment:
        check_signature(func, name or func.__name__.replace("_", "-"))
        declared = {}
        for key, spec in (params or {}).items():
            param = spec if isinstance(spec, Param) else Param(type(spec), spec)
            declared[key] = Param(**{**param.__dict__, "name": key})
        return Experiment(
            name=name or func.__name__.replace("_", "-"),
            func=func,
            description=inspect.cleandoc(description or func.__doc__ or ""),
            params=declared,
            datasets=tuple(datasets),
            requires=dict(requires or {}),
            headline=tuple(headline),
        )

    return wrap


def check_signature(func: Callable[..., Any], name: str) -> None:
    """Raise an :class:`ExperimentError` unless ``func`` takes exactly one parameter, ``ctx``
    (the run context), which the runner passes by position."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a callable Python cannot inspect: the run will tell
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(parameters) == 1 and parameters[0].kind in positional:
        return
    code = getattr(inspect.unwrap(func), "__code__", None)
    where = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""
    taken = ", ".join(str(p) for p in parameters)
    raise ExperimentError(
        f"experiment {name!r}: its function takes ({taken}); an experiment function takes exactly one "
        "parameter, the run context: def my_experiment(ctx): ... and reads its params from ctx.params "
        "(declare them with @experiment(params={...}))", where)
