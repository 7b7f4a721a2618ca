"""Who a client is on a tracking server with accounts: MLflow's environment variables, else a
netrc-style file that only its owner can read.

MLflow itself reads ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``. The
``requests`` library under it also reads ``~/.netrc`` (or ``$NETRC``), but without checking who
may read the file, and its entry then replaces the credentials of those variables. So the lab
reads the file itself, refuses one that others can read, and hands what it found to MLflow
through its variables; where the variables are set and a netrc file names the same host, the
file is kept from ``requests`` (``NETRC`` pointed at an empty file) so that the variables win.
"""

from __future__ import annotations

import os
import stat
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .config import ConfigError

if TYPE_CHECKING:
    from .config import Settings

USERNAME = "MLFLOW_TRACKING_USERNAME"
PASSWORD = "MLFLOW_TRACKING_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """A user name and password for the tracking server, and where they came from."""

    username: str
    password: str = field(repr=False)
    source: str = ""


class CredentialsError(ConfigError):
    """The credentials file is unsafe, unreadable or malformed."""


def server_host(uri: str) -> str | None:
    """The host name of an ``http(s)://`` tracking URI, else None (a local store needs no account)."""
    parsed = urlparse(uri)
    return parsed.hostname if parsed.scheme in ("http", "https") else None


def netrc_file(settings: Settings, env: MutableMapping[str, str] = os.environ) -> tuple[Path, bool]:
    """The netrc-style file to read, and whether the lake's settings name it (``[tracking]
    credentials``); else ``$NETRC`` or ``~/.netrc``, the files ``requests`` reads."""
    if settings.credentials_file is not None:
        return settings.credentials_file, True
    return Path(env.get("NETRC") or "~/.netrc").expanduser(), False


def read_netrc(path: Path, host: str) -> Credentials | None:
    """The entry of netrc-style file ``path`` for ``host`` (or its ``default`` entry), or None.
    A file with such an entry that anyone but its owner may read or write is refused, naming
    the ``chmod`` that fixes it."""
    import netrc

    try:
        entry = netrc.netrc(str(path)).authenticators(host)
        info = path.stat()
    except netrc.NetrcParseError as exc:
        raise CredentialsError(f"not a netrc file, line {exc.lineno}: {exc.msg} (expected lines such as "
                               f"`machine {host} login NAME password PASSWORD`)", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise CredentialsError(f"cannot read the credentials file: {reason}", path) from None
    if entry is None or not entry[0] or not entry[2]:
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        mine = info.st_uid == os.getuid()
        raise CredentialsError(f"it holds the password for {host} and others may read it (mode "
                               f"{stat.S_IMODE(info.st_mode):o}{'' if mine else f', owner uid {info.st_uid}'}): "
                               + (f"run `chmod 600 {path}`" if mine else "use a file of your own, mode 600"), path)
    return Credentials(entry[0], entry[2], str(path))


def resolve(settings: Settings, env: MutableMapping[str, str] = os.environ) -> Credentials | None:
    """The credentials for the lake's tracking server: ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``, else the netrc-style file's entry for the server's host
    (see :func:`netrc_file`), else None."""
    host = server_host(settings.tracking_uri)
    if host is None:
        return None
    if env.get(USERNAME) and env.get(PASSWORD):
        return Credentials(env[USERNAME], env[PASSWORD], f"{USERNAME}/{PASSWORD}")
    path, named = netrc_file(settings, env)
    if not named and not path.exists():
        return None
    return read_netrc(path, host)


def use_credentials(settings: Settings, env: MutableMapping[str, str] = os.environ) -> Credentials | None:
    """Resolve the credentials (:func:`resolve`) and hand them to MLflow, which reads them from
    its variables in ``env``. Called before the lake's tracking server is first used."""
    found = resolve(settings, env)
    if found is None:
        return None
    if found.source == f"{USERNAME}/{PASSWORD}":
        path, _ = netrc_file(settings, env)
        host = server_host(settings.tracking_uri)
        if host and path.is_file() and _names_host(path, host):
            env["NETRC"] = os.devnull  # else requests replaces the variables' credentials with the file's
    else:
        env[USERNAME], env[PASSWORD] = found.username, found.password
    return found


def _names_host(path: Path, host: str) -> bool:
    """Whether netrc file ``path`` has an entry that ``requests`` would use for ``host``."""
    import netrc

    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):
        return False  # requests ignores a file it cannot parse
