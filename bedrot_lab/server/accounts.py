"""The accounts of a tracking server that runs MLflow's basic-auth app, managed by its admin
through MLflow's own auth client (``mlflow.server.get_app_client("basic-auth", ...)``).

Every call goes to the lake's tracking server (``[tracking] uri`` or ``MLFLOW_TRACKING_URI``)
as the admin whose login :mod:`bedrot_lab.credentials` finds (``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``, or the credentials file). MLflow's answers become one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BedrotLabError, UsageError

if TYPE_CHECKING:
    from ..config import Settings
    from ..credentials import Credentials

T = TypeVar("T")

#: MLflow's permission names (mlflow.server.auth.permissions), weakest first; DENY overrides every grant
PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE", "DENY")
#: the users endpoint of the basic-auth app, which MLflow's client has no method for
LIST_USERS = "/api/2.0/mlflow/users/list"
#: the role MLflow keeps per user for the grants made to that user directly
DIRECT_ROLE = "__user_{id}__"


class AccountsError(BedrotLabError):
    """The server refused an account operation, or cannot be asked; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """What a permission is granted on: MLflow's resource type and id, and how to show it."""

    resource_type: str  # "experiment" or "registered_model"
    resource_id: str
    shown: str


class Accounts:
    """The admin's view of the lake's tracking server's accounts."""

    def __init__(self, settings: Settings, admin: Credentials):
        from mlflow.server import get_app_client

        self.settings = settings
        self.admin = admin
        self.url = settings.tracking_uri.rstrip("/")
        self.client = get_app_client("basic-auth", tracking_uri=self.url)

    @classmethod
    def open(cls, settings: Settings) -> Accounts:
        """Accounts of ``settings``' tracking server, as its admin; :class:`AccountsError` when the
        lake has no server, no admin login is given, or the server does not answer."""
        from ..credentials import server_host, use_credentials
        from ..tracking import check_server

        if server_host(settings.tracking_uri) is None:
            raise UsageError(f"`server user` talks to a tracking server, and this lake's store is "
                             f"{settings.tracking_uri_shown}: set [tracking] uri (or MLFLOW_TRACKING_URI) to "
                             "http://HOST:PORT")
        admin = use_credentials(settings)
        if admin is None:
            raise UsageError("no login for the tracking server: set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD to the admin's (or give it an entry in the [tracking] "
                             "credentials file; see docs/server.md)")
        check_server(settings)
        return cls(settings, admin)

    def add(self, name: str, password: str, *, admin: bool = False) -> dict[str, Any]:
        """Create user ``name`` with ``password`` (12 characters or more), an admin if ``admin``."""
        user = self._call(lambda: self.client.create_user(name, password), user=name)
        if admin:
            self._call(lambda: self.client.update_user_admin(name, True), user=name)
        return {"username": user.username, "id": user.id, "admin": admin}

    def remove(self, name: str) -> None:
        """Delete user ``name`` (MLflow deletes the user's grants with it)."""
        self._call(lambda: self.client.get_user(name), user=name)
        self._call(lambda: self.client.delete_user(name), user=name)

    def users(self) -> list[dict[str, Any]]:
        """Every user: name, admin or not, and each permission granted (directly or by a role)."""
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        def list_users() -> dict[str, Any]:
            response = http_request(get_default_host_creds(self.url), LIST_USERS, "GET")
            return verify_rest_response(response, LIST_USERS).json()

        found = self._call(list_users)
        names = self._experiment_names()
        users = []
        for user in found.get("users", []):
            grants = []
            for role in user.get("roles", []):
                direct = role.get("name") == DIRECT_ROLE.format(id=user.get("id"))
                for grant in role.get("permissions", []):
                    resource_type, pattern = grant.get("resource_type", ""), grant.get("resource_pattern", "")
                    grants.append({
                        "resource_type": resource_type, "resource": pattern,
                        "name": "*" if pattern == "*" else names.get(pattern, pattern)
                        if resource_type == "experiment" else pattern,
                        "permission": grant.get("permission"), "role": None if direct else role.get("name"),
                    })
            users.append({"username": user.get("username"), "admin": bool(user.get("is_admin")),
                          "permissions": grants})
        return sorted(users, key=lambda user: user["username"])

    def set_permission(self, name: str, target: str, permission: str, *, model: bool = False) -> Target:
        """Grant user ``name`` ``permission`` on experiment ``target`` (its name or id), or on
        registered model ``target`` if ``model``; a grant made before is replaced."""
        permission = permission.upper()
        if permission not in PERMISSIONS:
            raise UsageError(f"unknown permission {permission!r}; expected one of {', '.join(PERMISSIONS)}")
        self._call(lambda: self.client.get_user(name), user=name)
        found = self._model(target) if model else self._experiment(target)
        self._call(lambda: self.client.grant_user_permission(name, found.resource_type, found.resource_id,
                                                             permission), user=name)
        return found

    def _experiment(self, target: str) -> Target:
        """The experiment named ``target``, else the one whose id it is. MLflow grants on an id
        that names nothing without complaint, so the experiment is looked up first."""
        from mlflow import MlflowClient

        client = MlflowClient(self.url)
        found = self._call(lambda: client.get_experiment_by_name(target))
        if found is None and target.isdigit():
            found = self._call(lambda: _or_none(lambda: client.get_experiment(target)))
        if found is None:
            raise AccountsError(f"no experiment {target!r} on {self.url} (by name or id); `bedrot-lab runs list` "
                                "shows the experiments")
        return Target("experiment", found.experiment_id, f"experiment {found.name!r} ({found.experiment_id})")

    def _model(self, target: str) -> Target:
        from mlflow import MlflowClient

        client = MlflowClient(self.url)
        found = self._call(lambda: _or_none(lambda: client.get_registered_model(target)))
        if found is None:
            raise AccountsError(f"no registered model {target!r} on {self.url}; `bedrot-lab promotions` shows them")
        return Target("registered_model", found.name, f"registered model {found.name!r}")

    def _experiment_names(self) -> dict[str, str]:
        from mlflow import MlflowClient
        from mlflow.entities import ViewType

        client = MlflowClient(self.url)
        experiments = self._call(lambda: client.search_experiments(view_type=ViewType.ALL, max_results=50_000))
        return {experiment.experiment_id: experiment.name for experiment in experiments}

    def _call(self, call: Callable[[], T], *, user: str | None = None) -> T:
        """``call()``, with the server's refusals as one :class:`AccountsError` line each."""
        from mlflow.exceptions import MlflowException

        try:
            return call()
        except MlflowException as exc:
            raise AccountsError(self._explain(exc, user)) from None

    def _explain(self, exc: Exception, user: str | None) -> str:
        from ..tracking import store_error

        code = getattr(exc, "error_code", "")
        message = str(getattr(exc, "message", exc))
        who = f"{self.admin.username!r} (from {self.admin.source})"
        if code == "UNAUTHENTICATED":
            return f"{self.url} did not accept the password of {who}: give the admin's login"
        if code == "PERMISSION_DENIED":
            return (f"{who} is not an admin of {self.url}: `server user` commands need an admin's login "
                    "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)")
        if code == "RESOURCE_ALREADY_EXISTS" and user:
            return f"user {user!r} exists already on {self.url}; `bedrot-lab server user list` shows the users"
        if code == "RESOURCE_DOES_NOT_EXIST" and user and "User with username" in message:
            return f"no user {user!r} on {self.url}; `bedrot-lab server user list` shows the users"
        if code == "ENDPOINT_NOT_FOUND":
            return (f"{self.url} has no accounts (it runs without MLflow's basic-auth app): start it with "
                    "[server] auth = true (see docs/server.md)")
        if "Password must be at least" in message:
            return f"the password is too short: {self.url} wants {_minimum(message)} characters or more"
        mapped = store_error(exc)
        if mapped is not None:
            return str(mapped)
        # MLflow's own message, first line only: some quote the SQL statement, password hash included
        return f"{self.url} refused it: {message.splitlines()[0].split(' Error: (')[0]}"


def _or_none(call: Callable[[], T]) -> T | None:
    """``call()``, or None where the server says the thing does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _minimum(message: str) -> str:
    digits = [word for word in message.split() if word.isdigit()]
    return digits[0] if digits else "12"
