"""Credentials a caller must present: a bearer token and/or HTTP basic auth.

Three kinds of endpoint, each with its credentials; this module is their one definition:
- webhook (`POST /webhook/alertmanager`): `bearer_token` and/or `basic_username`/`basic_password`;
- operator (every other route but `/healthz`, `/readyz` and `/metrics`): `operator_token`, or
  the webhook's credentials when it is unset (never `events_token`);
- events (`POST /api/v1/events`): `events_token`, or the webhook's credentials when it is unset.
A secret is configured when it is set; settings refuse empty ones.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from responder.settings import Settings


class Credentials:
    """Checks an `Authorization` header in constant time against configured secrets."""

    def __init__(
        self,
        token: SecretStr | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
    ) -> None:
        self._token = None if token is None else token.get_secret_value().encode()
        self._basic: tuple[bytes, bytes] | None = None
        if username is not None and password is not None:
            self._basic = (username.encode(), password.get_secret_value().encode())
        if self._token == b"" or (self._basic is not None and b"" in self._basic):
            raise ValueError("an empty secret is not a credential")

    @classmethod
    def for_webhooks(cls, settings: Settings) -> Credentials:
        """What Alertmanager presents: the bearer token and/or basic auth."""
        return cls(settings.bearer_token, settings.basic_username, settings.basic_password)

    @classmethod
    def for_operators(cls, settings: Settings) -> Credentials:
        """The operator API's token; the webhook credentials when none is set."""
        if settings.operator_token is not None:
            return cls(settings.operator_token)
        return cls.for_webhooks(settings)

    @classmethod
    def for_events(cls, settings: Settings) -> Credentials:
        """The CloudEvents senders' token; the webhook credentials when none is set."""
        if settings.events_token is not None:
            return cls(settings.events_token)
        return cls.for_webhooks(settings)

    @property
    def required(self) -> bool:
        return self._token is not None or self._basic is not None

    @property
    def challenge(self) -> str:
        return "Bearer" if self._basic is None else 'Basic realm="responder"'

    def accepts(self, authorization: str | None) -> bool:
        """True when no credentials are configured or the header carries a valid one."""
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self._token is not None:
            return secrets.compare_digest(value.strip().encode(), self._token)
        if scheme == "basic" and self._basic is not None:
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            # Compare both parts every time so timing does not reveal which one was wrong.
            user_ok = secrets.compare_digest(user, self._basic[0])
            password_ok = secrets.compare_digest(password, self._basic[1])
            return bool(sep) and user_ok and password_ok
        return False


def unprotected(settings: Settings) -> list[str]:
    """The kinds of endpoint these settings leave open to anyone."""
    kinds = {
        "webhook": Credentials.for_webhooks,
        "operator": Credentials.for_operators,
        "events": Credentials.for_events,
    }
    return [kind for kind, credentials in kinds.items() if not credentials(settings).required]
