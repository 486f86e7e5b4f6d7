"""Credentials a caller must present: a bearer token and/or HTTP basic auth.

Three kinds of endpoint, each with its credentials; this module is their one definition:
- webhook (`POST /webhook/alertmanager`): `bearer_token` and/or `basic_username`/`basic_password`;
- operator (every other route but `/healthz`, `/readyz` and `/metrics`): the tokens of the
  named `operators`, each with a role, and `operator_token` (an operator named `operator_token`
  with role admin); the webhook's credentials (as role admin) when neither is set; never
  `events_token`;
- events (`POST /api/v1/events`, `POST /webhook/json/{mapping}`): `events_token`, or the
  webhook's credentials when it is unset; a JSON webhook whose mapping says `signature: github`
  and has a secret in `webhook_secrets` presents its body's HMAC instead (`signed_sender`).
A secret is configured when it is set; settings refuse empty ones.

An operator's role decides which operator routes it may call (`ROLES`); a valid token of too
small a role is a 403 naming the roles needed.

Routes ask for their credentials as FastAPI dependencies (`webhook_sender`, `events_sender`,
`Reading`, `Operating`, `Approving`), which FastAPI solves before it validates a route's path
and query parameters: a request without credentials learns nothing of what valid ones are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, Request
from pydantic import SecretStr

from responder.intake.errors import Refused

if TYPE_CHECKING:
    from responder.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "approver", "admin"]
Action = Literal["read", "operate", "approve"]
# What each role may do: read (decisions, explain, status, catalog, approvals, openapi),
# operate (pause, resume, manual runs, reload), approve (approve or reject a waiting run).
ROLES: dict[Role, frozenset[Action]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "operate"}),
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"read", "operate", "approve"}),
}
# Who calls when the operator API has no named operators: the shared credentials, as admin.
SHARED_TOKEN = "operator_token"
WEBHOOK_CREDENTIALS = "webhook-credentials"
ANONYMOUS = "anonymous"
# Names that stand for shared credentials, not for one person.
SHARED_IDENTITIES = frozenset({SHARED_TOKEN, WEBHOOK_CREDENTIALS, ANONYMOUS})


def roles_allowed(action: Action) -> list[Role]:
    """The roles that may do `action`, in `ROLES` order."""
    return [role for role, actions in ROLES.items() if action in actions]


@dataclass(frozen=True)
class Operator:
    """Who called the operator API: a name from the credentials, never from the request."""

    name: str
    role: Role

    def may(self, action: Action) -> bool:
        return action in ROLES[self.role]


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
    def for_operators(cls, settings: Settings) -> OperatorCredentials:
        """The operator API's tokens; the webhook credentials when none is set."""
        return OperatorCredentials.from_settings(settings)

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


class OperatorCredentials:
    """The operator API's credentials: each token names an operator and its role."""

    def __init__(
        self, tokens: list[tuple[SecretStr, Operator]], fallback: Credentials, fallback_name: str
    ) -> None:
        self._tokens = [(token.get_secret_value().encode(), who) for token, who in tokens]
        if any(token == b"" for token, _ in self._tokens):
            raise ValueError("an empty secret is not a credential")
        self._fallback = fallback
        self._fallback_operator = Operator(fallback_name, "admin")

    @classmethod
    def from_settings(cls, settings: Settings) -> OperatorCredentials:
        tokens = [(spec.token, Operator(spec.name, spec.role)) for spec in settings.operators]
        if settings.operator_token is not None:
            tokens.append((settings.operator_token, Operator(SHARED_TOKEN, "admin")))
        webhook = Credentials.for_webhooks(settings)
        # Own tokens replace the webhook's credentials, which then are no operator's.
        fallback = Credentials() if tokens else webhook
        name = WEBHOOK_CREDENTIALS if webhook.required else ANONYMOUS
        return cls(tokens, fallback, name)

    @property
    def required(self) -> bool:
        return bool(self._tokens) or self._fallback.required

    @property
    def challenge(self) -> str:
        return "Bearer" if self._tokens else self._fallback.challenge

    def identify(self, authorization: str | None) -> Operator | None:
        """The operator these credentials name; None when they are missing or wrong."""
        if not self._tokens:
            return self._fallback_operator if self._fallback.accepts(authorization) else None
        scheme, _, value = (authorization or "").partition(" ")
        presented = value.strip().encode()
        found = None
        for token, who in self._tokens:
            # Compare with every token, so timing does not reveal which one came close.
            if secrets.compare_digest(presented, token) and scheme.lower() == "bearer":
                found = who
        return found

    def accepts(self, authorization: str | None) -> bool:
        return self.identify(authorization) is not None


def unprotected(settings: Settings) -> list[str]:
    """The kinds of endpoint these settings leave open to anyone."""
    kinds: dict[str, Callable[[Settings], Credentials | OperatorCredentials]] = {
        "webhook": Credentials.for_webhooks,
        "operator": Credentials.for_operators,
        "events": Credentials.for_events,
    }
    return [kind for kind, credentials in kinds.items() if not credentials(settings).required]


@dataclass(frozen=True)
class Access:
    """The credentials of each kind of endpoint, built once for an app from its settings."""

    webhook: Credentials
    operator: OperatorCredentials
    events: Credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        """These settings' credentials; a warning for each kind of endpoint they leave open."""
        if open_kinds := unprotected(settings):
            log.warning(
                "the %s endpoints accept requests without credentials", " and ".join(open_kinds)
            )
        elif settings.operator_token is None and not settings.operators:
            log.warning("no operators: the operator API accepts the webhook credentials as admin")
        return cls(
            Credentials.for_webhooks(settings),
            Credentials.for_operators(settings),
            Credentials.for_events(settings),
        )


def _access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


def _authorization(request: Request) -> str | None:
    """The request's Authorization header; a 400 for two of them, which a proxy in front
    might read differently (the last one, say)."""
    authorization = request.headers.getlist("authorization")
    if len(authorization) > 1:
        raise Refused(400, "more than one Authorization header", field="authorization")
    return authorization[0] if authorization else None


def _unauthorized(credentials: Credentials | OperatorCredentials) -> Refused:
    return Refused(
        401, "missing or invalid credentials", headers={"WWW-Authenticate": credentials.challenge}
    )


async def webhook_sender(request: Request) -> None:
    """Dependency of the Alertmanager webhook: a 401 without the webhook's credentials."""
    credentials = _access(request).webhook
    if not credentials.accepts(_authorization(request)):
        raise _unauthorized(credentials)


async def events_sender(request: Request) -> None:
    """Dependency of the CloudEvents endpoint: a 401 without the events' credentials."""
    credentials = _access(request).events
    if not credentials.accepts(_authorization(request)):
        raise _unauthorized(credentials)


def signed_sender(request: Request, body: bytes, secret: SecretStr) -> None:
    """GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the body with the webhook's secret),
    compared in constant time: a 401 when it is missing or wrong."""
    digest = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    presented = request.headers.getlist("x-hub-signature-256")
    if len(presented) != 1 or not hmac.compare_digest(
        presented[0].strip().encode(), f"sha256={digest}".encode()
    ):
        raise Refused(401, "missing or invalid X-Hub-Signature-256", field="X-Hub-Signature-256")


def operator_who_may(action: Action) -> Callable[[Request], Awaitable[Operator]]:
    """A dependency naming the operator the credentials carry: a 401 without valid ones,
    a 403 when the operator's role may not do `action`."""

    async def operator(request: Request) -> Operator:
        credentials = _access(request).operator
        who = credentials.identify(_authorization(request))
        if who is None:
            raise _unauthorized(credentials)
        if not who.may(action):
            needed = roles_allowed(action)
            raise Refused(
                403,
                f"operator {who.name} has role {who.role}; this needs role {' or '.join(needed)}",
                role=who.role,
                needed=needed,
            )
        return who

    return operator


Reading = Annotated[Operator, Depends(operator_who_may("read"))]
Operating = Annotated[Operator, Depends(operator_who_may("operate"))]
Approving = Annotated[Operator, Depends(operator_who_may("approve"))]


def audit(who: Operator, what: str, *args: object) -> str:
    """Log a change under the name of the operator who made it; that name."""
    log.warning("operator %s (%s): " + what, who.name, who.role, *args)
    return who.name
