"""The ``[server]`` table of ``bedrot-lab.toml``: where MLflow's tracking server listens, its
stores, its security options, its connection pools and its accounts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, default_tracking_uri

if TYPE_CHECKING:
    from ..config import Settings

#: MLflow's permission names (mlflow.server.auth.permissions), for ``default_permission``
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
X_FRAME_OPTIONS = ("SAMEORIGIN", "DENY", "NONE")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")

#: key -> (expected type(s), default); ``None`` defaults are worked out from the lake
DEFAULTS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "host": (str, "127.0.0.1"),
    "port": (int, 5000),
    "workers": (int, 2),
    "backend_store_uri": (str, None),
    "artifacts_destination": (str, None),
    "allowed_hosts": (list, None),
    "cors_allowed_origins": (list, None),
    "x_frame_options": (str, None),
    "pool_size": (int, 5),
    "max_overflow": (int, 5),
    "pool_recycle": (int, 1800),
    "job_execution": (bool, False),
    "start_timeout": ((int, float), 90),
    "auth": (bool, False),
    "default_permission": (str, "READ"),
    "admin_username": (str, "admin"),
    "auth_database_uri": (str, None),
    "auth_cache_seconds": (int, 0),
    "secrets_file": (str, None),
}


@dataclass(frozen=True)
class ServerSettings:
    """``[server]`` parsed, with the lake's defaults filled in (see ``docs/server.md``)."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    allowed_hosts: tuple[str, ...] = ()
    cors_allowed_origins: tuple[str, ...] = ()
    x_frame_options: str | None = None
    pool_size: int = 5
    max_overflow: int = 5
    pool_recycle: int = 1800
    job_execution: bool = False
    start_timeout: float = 90.0
    auth: bool = False
    default_permission: str = "READ"
    admin_username: str = "admin"
    auth_database_uri: str | None = None
    auth_cache_seconds: int = 0
    secrets_file: Path | None = None
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerSettings:
        return cls.from_table(settings.tables.get("server", {}), settings.config_file, settings)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], path: Path | None = None,
                   settings: Settings | None = None) -> ServerSettings:
        """Parse ``[server]``; a mistake raises :class:`ConfigError` naming the file and key.
        Without ``settings`` (only checking) the lake's defaults are left as placeholders."""
        values = {key: default for key, (_, default) in DEFAULTS.items()}
        for key, value in table.items():
            if key not in DEFAULTS:
                raise ConfigError(f"unknown key; [server] takes {', '.join(DEFAULTS)}", path, f"server.{key}")
            expected = DEFAULTS[key][0]
            if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
                raise ConfigError(f"expected {_type_name(expected)}, got {value!r}", path, f"server.{key}")
            values[key] = value
        for key in ("allowed_hosts", "cors_allowed_origins"):
            if values[key] is not None and not all(isinstance(item, str) and item for item in values[key]):
                raise ConfigError(f"expected a list of strings, got {values[key]!r}", path, f"server.{key}")
        _check_numbers(values, path)
        _check_choice(values, "x_frame_options", X_FRAME_OPTIONS, path)
        _check_choice(values, "default_permission", PERMISSIONS, path)
        for key in ("backend_store_uri", "auth_database_uri"):
            if values[key] is not None:
                values[key] = database_uri(values[key], path, f"server.{key}")
        root = settings.root if settings else Path(".")
        backend = values["backend_store_uri"] or _lake_backend(settings)
        artifacts = values["artifacts_destination"] or "mlruns/artifacts"
        secrets = values["secrets_file"]
        return cls(
            backend_store_uri=backend,
            artifacts_destination=artifacts if "://" in artifacts else str(_under(root, artifacts)),
            host=values["host"], port=values["port"], workers=values["workers"],
            allowed_hosts=tuple(values["allowed_hosts"] or ()),
            cors_allowed_origins=tuple(values["cors_allowed_origins"] or ()),
            x_frame_options=values["x_frame_options"],
            pool_size=values["pool_size"], max_overflow=values["max_overflow"], pool_recycle=values["pool_recycle"],
            job_execution=values["job_execution"], start_timeout=float(values["start_timeout"]),
            auth=values["auth"], default_permission=values["default_permission"],
            admin_username=values["admin_username"], auth_database_uri=values["auth_database_uri"],
            auth_cache_seconds=values["auth_cache_seconds"],
            secrets_file=_under(root, secrets) if secrets else None, path=path,
        )

    def overridden(self, **flags: Any) -> ServerSettings:
        """These settings with the command line's flags (those not ``None``) on top."""
        given = {key: value for key, value in flags.items() if value is not None}
        for key in ("backend_store_uri", "auth_database_uri"):
            if key in given:
                given[key] = database_uri(given[key], None, f"--{key.replace('_', '-')}")
        if "artifacts_destination" in given and "://" not in given["artifacts_destination"]:
            given["artifacts_destination"] = str(Path(given["artifacts_destination"]).expanduser().resolve())
        return replace(self, **given)

    @property
    def url(self) -> str:
        """Where clients reach the server (a wildcard bind address is reached on loopback here)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def engines_per_worker(self) -> int:
        """SQLAlchemy engines (each its own pool) one worker opens: tracking, model registry,
        the job store when jobs run, and the account store with auth on."""
        return 2 + self.job_execution + self.auth

    @property
    def max_connections(self) -> int:
        """The most connections this server may hold to its database server: every worker's
        every engine with its pool full, plus those the ``mlflow server`` parent process keeps
        open while it waits on its workers (measured: 3, and 1 more with auth)."""
        parent = 3 + self.auth
        return self.workers * self.engines_per_worker * (self.pool_size + self.max_overflow) + parent


def database_uri(uri: str, path: Path | None, key: str) -> str:
    """``uri`` checked to be a database URI, a PostgreSQL one spelled with the psycopg 3 driver.

    A bare ``postgresql://`` means "the dialect's default driver", which SQLAlchemy changed
    (psycopg2 up to 2.0, psycopg 3 from 2.1), and MLflow's server failed to start where that
    default was not installed; ``postgresql+psycopg://`` names the driver we install."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0] not in DATABASE_SCHEMES:
        raise ConfigError(f"expected a database URI such as postgresql+psycopg://USER@HOST:5432/mlflow "
                          f"or sqlite:////path/mlflow.db, got {_shown(uri)!r}", path, key)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return uri


def _lake_backend(settings: Settings | None) -> str:
    """The lake's own tracking store when it is a database; else (a lake that is a client of a
    server) the embedded SQLite file."""
    if settings is None:
        return "sqlite:///mlflow.db"
    uri = settings.tracking_uri
    if uri.partition("://")[0].split("+")[0] in DATABASE_SCHEMES:
        return database_uri(uri, None, "tracking.uri")
    return default_tracking_uri(settings.root)


def _check_numbers(values: dict[str, Any], path: Path | None) -> None:
    if not 0 < values["port"] < 65536:
        raise ConfigError(f"expected a port number from 1 to 65535, got {values['port']}", path, "server.port")
    for key in ("workers", "pool_size", "pool_recycle", "start_timeout"):
        if values[key] <= 0:
            raise ConfigError(f"expected a positive number, got {values[key]!r}", path, f"server.{key}")
    if values["auth_cache_seconds"] < 0:
        raise ConfigError(f"expected 0 (no cache) or more seconds, got {values['auth_cache_seconds']!r}", path,
                          "server.auth_cache_seconds")
    if values["max_overflow"] < 1:
        # MLflow passes MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW on only when it is truthy: a 0 would
        # silently become SQLAlchemy's default of 10
        raise ConfigError(f"expected 1 or more (MLflow ignores 0 and uses SQLAlchemy's 10), "
                          f"got {values['max_overflow']!r}", path, "server.max_overflow")


def _check_choice(values: dict[str, Any], key: str, choices: tuple[str, ...], path: Path | None) -> None:
    if values[key] is not None and values[key] not in choices:
        raise ConfigError(f"expected one of {', '.join(choices)}, got {values[key]!r}", path, f"server.{key}")


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    names = {str: "a string", bool: "true or false", list: "a list of strings", int: "a number", float: "a number"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _under(root: Path, folder: str) -> Path:
    path = Path(folder).expanduser()
    return path if path.is_absolute() else root / path


def _shown(uri: str) -> str:
    from ..secrets import scrub

    return scrub(uri)[0]
