"""The webhook alert sink: each sandbox violation transition POSTed as JSON to ``[daemon.alerts] webhook``."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import BedrotLabError
from ..plugins import describe
from ..secrets import Masker, scrub

if TYPE_CHECKING:
    from ..config import Settings
    from ..sandbox.violations import Transition

log = logging.getLogger(__name__)

#: tries per alert: the first, then retries after BACKOFF, 2 x BACKOFF ... seconds
ATTEMPTS = 3
BACKOFF = 1.0
#: seconds a webhook that failed every try is left alone; alerts meanwhile fail at once
HOLD_OFF = 60.0
#: the longest ``Retry-After`` waited for
MAX_RETRY_AFTER = 10.0
#: bytes of an error response quoted in the message (``invalid_payload``)
QUOTED_BYTES = 200

#: webhook URL -> time.monotonic() until which it is not tried again
_held_until: dict[str, float] = {}


class WebhookError(BedrotLabError):
    """An alert the webhook did not take; the message names the webhook by its origin only."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would turn the POST into a GET without its body,
    and carry the ``Authorization`` header to wherever the redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class Webhook:
    """Where alerts go: ``url`` without its user and password, which become a Basic
    ``authorization``; ``shown`` is what messages print of it (scheme, host and port:
    Slack-style incoming webhooks hold their secret in the path)."""

    url: str
    shown: str
    authorization: str | None
    timeout: float

    @classmethod
    def parse(cls, url: str, timeout: float) -> Webhook:
        parts = urllib.parse.urlsplit(url)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        authorization = None
        if userinfo:
            user, _, password = userinfo.partition(":")
            pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
            authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
        return cls(bare, scrub(f"{parts.scheme}://{hostport}")[0], authorization, timeout)

    def post(self, document: dict[str, Any]) -> None:
        """POST ``document`` as JSON. Connection errors, timeouts, 429 and 5xx answers are
        tried :data:`ATTEMPTS` times with a growing pause; other answers (4xx, a redirect)
        are not. Raises :class:`WebhookError` when the webhook did not take it; after
        every try failed, it is not tried again for :data:`HOLD_OFF` seconds, so that a
        check with many transitions waits for a dead webhook once, not once each."""
        held = _held_until.get(self.url, 0.0) - time.monotonic()
        if held > 0:
            raise WebhookError(f"not sent: {self.shown} failed every try; trying it again in {held:.0f} s")
        body = json.dumps(document).encode("ascii")
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            wait = BACKOFF * 2 ** (attempt - 1)
            try:
                self._send(body)
            except urllib.error.HTTPError as exc:
                answer = self._answer(exc)
                if exc.code != 429 and exc.code < 500:
                    raise WebhookError(f"{self.shown} answered {answer}; not retried") from None
                reason = f"answered {answer}"
                wait = max(wait, _retry_after(exc))
            except (OSError, http.client.HTTPException) as exc:
                cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                reason = self._clean(describe(cause) if isinstance(cause, BaseException) else str(cause))
            else:
                _held_until.pop(self.url, None)
                return
            if attempt < ATTEMPTS:
                log.info("webhook %s %s (try %d of %d); trying again in %.1f s", self.shown, reason, attempt,
                         ATTEMPTS, wait)
                time.sleep(wait)
        _held_until[self.url] = time.monotonic() + HOLD_OFF
        raise WebhookError(f"{self.shown} failed {ATTEMPTS} tries, the last: {reason}; "
                           f"alerts to it fail at once for {HOLD_OFF:.0f} s")

    def _send(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"bedrot-lab/{__version__}"})
        if self.authorization:
            request.add_unredirected_header("Authorization", self.authorization)
        opener = urllib.request.build_opener(_NoRedirect)
        with opener.open(request, timeout=self.timeout) as response:
            response.read()

    def _answer(self, error: urllib.error.HTTPError) -> str:
        """``500 Internal Server Error: <the start of the body>``, masked, in one line."""
        try:
            quoted = error.read(QUOTED_BYTES).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            quoted = ""
        finally:
            error.close()
        text = " ".join(f"{error.code} {error.reason}: {quoted}".split()).rstrip(":")
        return self._clean(text)

    def _clean(self, text: str) -> str:
        return scrub(text.replace(self.url, self.shown))[0]


def _retry_after(error: urllib.error.HTTPError) -> float:
    try:
        return min(float(error.headers.get("Retry-After", 0)), MAX_RETRY_AFTER)
    except (TypeError, ValueError):  # an HTTP date: the backoff will do
        return 0.0


def _printable(value: Any) -> Any:
    """A string with what is not UTF-8 (names on disk need not be) escaped, ``\\udce9``, as
    the log shows it: a receiver's JSON parser may refuse the lone surrogate ``violations.jsonl`` holds."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def payload(transition: Transition, settings: Settings) -> dict[str, Any]:
    """The JSON document POSTed for ``transition``: the line ``violations.jsonl`` gets,
    plus ``text``, one human line for chat webhooks; every string masked as runs mask theirs."""
    document = {"lake": settings.name, **transition.to_dict(), "text": f"{settings.name}: {transition.describe()}"}
    return Masker().data({key: _printable(value) for key, value in document.items()})


def send_alert(transition: Transition, settings: Settings) -> None:
    """POST ``transition`` to ``[daemon.alerts] webhook``, when one is set; raise
    :class:`WebhookError` when it could not be delivered."""
    from .settings import DaemonSettings

    daemon = DaemonSettings.from_settings(settings)
    if daemon.webhook:
        Webhook.parse(daemon.webhook, daemon.webhook_timeout).post(payload(transition, settings))
