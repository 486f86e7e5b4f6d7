"""Credentials a caller must present: a bearer token and/or HTTP basic auth."""

from __future__ import annotations

import base64
import binascii
import secrets

from responder.settings import Settings


class Credentials:
    """Checks an `Authorization` header in constant time against configured secrets."""

    def __init__(self, settings: Settings) -> None:
        token = settings.bearer_token
        password = settings.basic_password
        self._token = token.get_secret_value().encode() if token else None
        self._basic: tuple[bytes, bytes] | None = None
        if settings.basic_username is not None and password is not None:
            self._basic = (settings.basic_username.encode(), password.get_secret_value().encode())

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
