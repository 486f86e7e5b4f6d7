"""The HTTP API: the Alertmanager webhook, decisions, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows import flow_names
from responder import metrics
from responder.control import leases
from responder.control import pause as remediation
from responder.decision.decisions import Verdict
from responder.events.cloudevents import is_batch, parse_events
from responder.events.manual_runs import MANUAL_RULE, RunRequest, RunRequestBody
from responder.events.webhook import AlertmanagerWebhook, canonical_fingerprint
from responder.exceptions import ApprovalError, DispatchError, DocumentError, StoreUnavailable
from responder.intake.auth import (
    SHARED_IDENTITIES,
    Action,
    Credentials,
    Operator,
    OperatorCredentials,
    roles_allowed,
    unprotected,
)
from responder.intake.ratelimit import RateLimit, client_of
from responder.runtime.service import Service
from responder.storage.approvals import ANSWERING
from responder.storage.decisions import run_status
from responder.storage.inbox import InboxSource

log = logging.getLogger(__name__)


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refuse it as a bad query
WEBHOOK_CONTENT_TYPES = frozenset({"application/json"})
EVENT_CONTENT_TYPES = frozenset(
    {"application/cloudevents+json", "application/cloudevents-batch+json", "application/json"}
)


class _BodyTooLarge(Exception):
    pass


class PauseRequest(BaseModel):
    """Body of `POST /api/v1/pause`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)
    by: str = Field("", max_length=200)


class ApproveRequest(BaseModel):
    """Body of `POST /api/v1/approvals/{flow_run_id}/approve` (may be empty)."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field("", max_length=2000)


class RejectRequest(BaseModel):
    """Body of `POST /api/v1/approvals/{flow_run_id}/reject`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


FLOW_RUN_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

B = TypeVar("B", bound=BaseModel)


def _documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body the handler reads itself (after checking credentials)."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    return {"requestBody": {**schema, "required": True}}


# Every error body: `error` says what is wrong, `fields` (on a 422) which inputs.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _encoded(request: Request) -> JSONResponse | None:
    """A 415 for a compressed body: bodies are read as sent, never decompressed (no zip bombs)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    return _error(415, "content encoding must be identity (uncompressed)", received=encoding[:100])


def _field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    # Never echo the input back: it may be huge or hostile.
    errors = (
        exc.errors(include_url=False, include_input=False)
        if isinstance(exc, ValidationError)
        else exc.errors()
    )
    return [
        {
            # A location holds dict keys (label names), which are input too: cut them short.
            "field": ".".join(str(p)[:100] for p in err["loc"]) or "(body)",
            "message": str(err["msg"])[:300],
            "type": err["type"],
        }
        for err in errors[:50]
    ]


def _on_sighup(service: Service) -> bool:
    """Reload on SIGHUP, like Prometheus and Alertmanager; False where signals cannot be set."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        async def run() -> None:
            with contextlib.suppress(DocumentError, StoreUnavailable):
                await service.reload()

        reloads.add(task := loop.create_task(run()))
        task.add_done_callback(reloads.discard)

    reloads: set[asyncio.Task[None]] = set()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError):
        return False  # not the main thread
    return True


def _waiting(row: dict[str, Any]) -> dict[str, Any]:
    """A run awaiting approval as operators see it: the alert, the rule, what will be done."""
    return {
        "decision_id": row["id"],
        "flow_run_id": row["flow_run_id"],
        "flow_run_url": row["flow_run_url"],
        "since": (row.get("approval") or {}).get("since"),
        "alert": {
            "alertname": row["alertname"],
            "fingerprint": row["incident"].partition("@")[0],
            "incident": row["incident"],
            "labels": row["labels"],
        },
        "rule": row["rule"],
        "reason": row["reason"],
        "flow": row["flow"],
        "parameters": row["parameters"],
        "key": row["guard_key"],
    }


def _action_of(request: Request) -> Action:
    """What an operator route does, for a request refused before its handler ran."""
    if request.method == "GET":
        return "read"
    return "approve" if request.url.path.startswith("/api/v1/approvals/") else "operate"


def create_app(service: Service) -> FastAPI:
    """Build the FastAPI app around a `Service`; the app's lifespan starts and stops it."""
    settings = service.settings
    webhook_auth = Credentials.for_webhooks(settings)
    operator_auth = Credentials.for_operators(settings)
    events_auth = Credentials.for_events(settings)
    if open_kinds := unprotected(settings):
        log.warning(
            "the %s endpoints accept requests without credentials", " and ".join(open_kinds)
        )
    elif settings.operator_token is None and not settings.operators:
        log.warning("no operators: the operator API accepts the webhook credentials as admin")
    rate_limit = (
        RateLimit(
            settings.rate_limit_per_client,
            settings.rate_limit_burst,
            max_clients=settings.rate_limit_clients,
        )
        if settings.rate_limit_per_client > 0
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        hangup = _on_sighup(service)
        try:
            yield
        finally:
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await service.stop()

    # The API's description is served to operators only, like the rest of the API: no open
    # /docs, /redoc or /openapi.json.
    app = FastAPI(
        title="Responder",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    fastapi_openapi = app.openapi

    def openapi_document() -> dict[str, Any]:
        """FastAPI's document, with a 422 described as this API answers it."""
        if app.openapi_schema is None:
            fastapi_openapi()["components"]["schemas"]["HTTPValidationError"] = ERROR_SCHEMA
        return fastapi_openapi()

    app.openapi = openapi_document  # type: ignore[method-assign]

    def refused(
        request: Request,
        credentials: Credentials | OperatorCredentials,
        action: Action = "read",
    ) -> JSONResponse | None:
        """A 401 unless the request carries these credentials; a 400 for two of them,
        which a proxy in front might read differently (the last one, say). An operator
        whose role may not do `action` gets a 403; one who may is `request.state.operator`."""
        authorization = request.headers.getlist("authorization")
        if len(authorization) > 1:
            return _error(400, "more than one Authorization header", field="authorization")
        header = authorization[0] if authorization else None
        if isinstance(credentials, OperatorCredentials):
            who = credentials.identify(header)
            if who is not None and not who.may(action):
                needed = roles_allowed(action)
                return _error(
                    403,
                    f"operator {who.name} has role {who.role}; this needs role "
                    f"{' or '.join(needed)}",
                    role=who.role,
                    needed=needed,
                )
            request.state.operator = who
        elif credentials.accepts(header):
            return None
        if getattr(request.state, "operator", None) is not None:
            return None
        response = _error(401, "missing or invalid credentials")
        response.headers["WWW-Authenticate"] = credentials.challenge
        return response

    def audit(request: Request, what: str, *args: Any) -> str:
        """Log a change under the name of the operator who made it; that name."""
        who: Operator = request.state.operator
        log.warning("operator %s (%s): " + what, who.name, who.role, *args)
        return who.name

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        """Path and query parameters are checked before a handler runs, and so before the
        handler's credential check: ask for credentials first here too (every route with
        such parameters is an operator route), and answer in this API's error format."""
        if denied := refused(request, operator_auth, _action_of(request)):
            return denied
        return _error(422, "invalid request parameters", fields=_field_errors(exc))

    def throttled(request: Request, endpoint: str) -> JSONResponse | None:
        """A 429 when this request's client has used up its rate; checked after the
        credentials, so a stranger cannot spend a real sender's bucket (a 401 costs little)."""
        if rate_limit is None:
            return None
        wait = rate_limit.admit(client_of(request.client.host if request.client else None))
        if not wait:
            return None
        metrics.RATE_LIMITED.labels(endpoint=endpoint).inc()
        response = _error(
            429,
            f"too many requests from this client: at most {rate_limit.rate:g} per second "
            f"in bursts of {rate_limit.burst}",
            retry_after_seconds=math.ceil(wait * 1000) / 1000,
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response

    async def intake(
        request: Request,
        credentials: Credentials,
        source: str,
        content_types: frozenset[str],
        parse: Callable[[bytes, str], int],
        what: str,
        noun: str,
    ) -> JSONResponse:
        """Authenticate, check type and size, validate, commit to the inbox, then acknowledge.

        `parse` validates the body (raising pydantic's ValidationError) and counts its items.
        """
        if denied := refused(request, credentials):
            return denied
        if limited := throttled(request, source):
            return limited
        if encoded := _encoded(request):
            return encoded
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in content_types:
            return _error(
                415,
                f"content type must be {' or '.join(sorted(content_types))}",
                received=content_type[:100],
            )
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except _BodyTooLarge:
            return _error(413, f"body exceeds the limit of {settings.max_body_bytes} bytes")
        try:
            count = parse(body, content_type)
        except ValidationError as exc:
            errors = _field_errors(exc)
            if any(e["type"] == "json_invalid" for e in errors):
                return _error(400, "body is not valid JSON", detail=errors[0]["message"])
            return _error(422, f"body is not {what}", fields=errors)
        try:
            inbox_id = await service.store.inbox.add(InboxSource(source), body)
        except StoreUnavailable as exc:
            log.error("%s not committed, answering 503: %s", source, exc)
            return _error(503, "store unavailable; retry")
        service.loop.wake.set()
        return JSONResponse({"status": "accepted", "inbox_id": inbox_id, noun: count})

    async def json_body(request: Request, model: type[B], what: str) -> B | JSONResponse:
        """The request's JSON body as `model` (an empty body is `{}`), or a 413 or 422.

        Read by the handler, after the credentials: a request without them learns nothing
        of what a valid body is.
        """
        if encoded := _encoded(request):
            return encoded
        try:
            raw = await _read_body(request, settings.max_body_bytes)
            return model.model_validate_json(raw or b"{}")
        except _BodyTooLarge:
            return _error(413, f"body exceeds the limit of {settings.max_body_bytes} bytes")
        except ValidationError as exc:
            return _error(422, f"body is not {what}", fields=_field_errors(exc))

    def alertmanager_payload(body: bytes, _content_type: str) -> int:
        return len(AlertmanagerWebhook.model_validate_json(body).alerts)

    def cloudevents_payload(body: bytes, content_type: str) -> int:
        batch = content_type == "application/cloudevents-batch+json" or (
            content_type == "application/json" and is_batch(body)
        )
        return len(parse_events(body, batch))

    @app.post("/webhook/alertmanager")
    async def alertmanager_webhook(request: Request) -> JSONResponse:
        """Validate an Alertmanager v4 payload, commit it to the inbox, then acknowledge."""
        response = await intake(
            request,
            webhook_auth,
            "alertmanager",
            WEBHOOK_CONTENT_TYPES,
            alertmanager_payload,
            "an Alertmanager webhook (version 4)",
            "alerts",
        )
        metrics.WEBHOOKS.labels(code=str(response.status_code)).inc()
        return response

    @app.post("/api/v1/events")
    async def cloudevents(request: Request) -> JSONResponse:
        """Accept CloudEvents 1.0 (structured JSON, one or a batch) into the inbox."""
        return await intake(
            request,
            events_auth,
            "cloudevents",
            EVENT_CONTENT_TYPES,
            cloudevents_payload,
            "a CloudEvent (1.0, structured mode) or a batch of them",
            "events",
        )

    def linked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decision rows with their flow run's Prefect UI link and status in words."""
        dispatcher = service.dispatcher
        for row in rows:
            run_id = row.get("flow_run_id")
            row["flow_run_url"] = dispatcher.flow_run_url(run_id) if run_id and dispatcher else None
            row["run_status"] = run_status(row)
        return rows

    @app.get("/api/v1/decisions")
    async def list_decisions(
        request: Request,
        limit: int = Query(100, ge=1, le=1000),
        rule: str | None = Query(None, max_length=64, pattern=NO_NUL),
        verdict: str | None = Query(None, max_length=16, pattern=NO_NUL),
        alertname: str | None = Query(None, max_length=256, pattern=NO_NUL),
        # Decision ids are the store's INTEGER column: a larger one cannot reach the database.
        before_id: int | None = Query(None, ge=1, le=2**31 - 1),
    ) -> JSONResponse:
        """Recorded decisions, newest first, with the flow run's Prefect UI link."""
        if denied := refused(request, operator_auth):
            return denied
        rows = await service.store.decisions.recent(
            limit=limit, rule=rule, verdict=verdict, alertname=alertname, before_id=before_id
        )
        return JSONResponse({"decisions": linked(rows)})

    @app.get("/api/v1/explain/{fingerprint}")
    async def explain(
        request: Request, fingerprint: str = Path(pattern=r"^[0-9a-fA-F]{1,64}$")
    ) -> JSONResponse:
        """An alert's story: every decision about it, and how each rule judges it now."""
        if denied := refused(request, operator_auth):
            return denied
        fingerprint = canonical_fingerprint(fingerprint)  # as alerts are stored
        rows = linked(await service.store.decisions.recent(limit=1000, fingerprint=fingerprint))
        engine = service.loop.engine
        held = [
            {
                "incident": alert.incident,
                "rules": [
                    {"rule": rule.name, "holds": failure is None, "failure": failure}
                    for rule, failure in engine.explain(alert)
                ],
            }
            for alert in engine.held_alerts(fingerprint)
        ]
        if not rows and not held:
            return _error(404, f"no alert with fingerprint {fingerprint} was seen")
        return JSONResponse({"decisions": list(reversed(rows)), "held": held})

    @app.get("/api/v1/catalog")
    async def list_catalog(request: Request) -> JSONResponse:
        """Every atomic operation and flow: description, risk level, tags."""
        if denied := refused(request, operator_auth):
            return denied
        from flows.catalog import catalog

        entries = await asyncio.to_thread(catalog)
        return JSONResponse({"catalog": [entry.summary() for entry in entries]})

    @app.get("/api/v1/catalog/{name}")
    async def show_catalog_entry(
        request: Request, name: str = Path(pattern=r"^[a-z][a-z0-9._-]{0,127}$")
    ) -> JSONResponse:
        """One operation or flow, with its parameters' JSON Schema."""
        if denied := refused(request, operator_auth):
            return denied
        from flows.catalog import find

        entry = await asyncio.to_thread(find, name)
        if entry is None:
            return _error(404, f"no operation or flow is named {name!r}", name=name)
        return JSONResponse(entry.detail())

    @app.post("/api/v1/catalog/flows/{name}/runs")
    async def start_run(
        request: Request, name: str = Path(pattern=r"^[a-z][a-z0-9-]{0,127}$")
    ) -> JSONResponse:
        """Start a flow by hand, through the same guard as rule decisions.

        Answers 202 with the decision when the guard admitted it, 409 when it refused
        (with the reason), or 202 `pending` if the engine has not decided within a few
        seconds (the request is committed and will be decided). The requester recorded is
        the operator the credentials name.
        """
        if denied := refused(request, operator_auth, "operate"):
            return denied
        if limited := throttled(request, "run-request"):
            return limited
        known = flow_names()
        if name not in known:
            return _error(404, f"unknown flow {name!r}", flow=name, known=known)
        body = await json_body(request, RunRequestBody, "a run request")
        if isinstance(body, JSONResponse):
            return body
        from flows.catalog import parameter_errors

        errors = await asyncio.to_thread(parameter_errors, name, body.parameters)
        if errors:
            return _error(422, f"parameters do not fit flow {name!r}", fields=errors)
        declared = body.requested_by
        who = audit(request, "requests a run of %s: %r", name, body.reason)
        run_request = RunRequest(
            flow=name,
            **{**body.model_dump(), "requested_by": who},
            declared_by="" if declared in ("", who) else declared,
        )
        try:
            inbox_id = await service.store.inbox.add(
                InboxSource.RUN_REQUEST, run_request.model_dump_json().encode()
            )
        except StoreUnavailable as exc:
            log.error("run request not committed, answering 503: %s", exc)
            return _error(503, "store unavailable; retry")
        service.loop.wake.set()
        deadline = time.monotonic() + settings.run_request_wait_seconds
        while time.monotonic() < deadline:
            rows = await service.store.decisions.recent(limit=1, inbox_id=inbox_id)
            if rows:
                (decision,) = linked(rows)
                status = 409 if decision["verdict"] == Verdict.REFUSED else 202
                return JSONResponse({"decision": decision}, status_code=status)
            await asyncio.sleep(0.05)
        return JSONResponse({"status": "pending", "inbox_id": inbox_id}, status_code=202)

    @app.post("/api/v1/pause", openapi_extra=_documented_body(PauseRequest))
    async def pause(request: Request) -> JSONResponse:
        """Refuse every new remediation until resumed; recorded as refusal `paused`, `by`
        the operator the credentials name (`declared_by`: the body's `by`, if another)."""
        if denied := refused(request, operator_auth, "operate"):
            return denied
        body = await json_body(request, PauseRequest, "a pause request")
        if isinstance(body, JSONResponse):
            return body
        who = audit(request, "pauses remediation: %r", body.reason)
        paused = await remediation.pause(service.store, body.reason, who, declared_by=body.by)
        return JSONResponse({"pause": paused.to_json()})

    @app.post("/api/v1/resume")
    async def resume(request: Request) -> JSONResponse:
        """Lift the pause."""
        if denied := refused(request, operator_auth, "operate"):
            return denied
        await remediation.resume(service.store)
        audit(request, "resumes remediation")
        return JSONResponse({"pause": None})

    @app.get("/api/v1/status")
    async def status(request: Request) -> JSONResponse:
        """The pause switch, held keys and mutexes, cooling keys, and the decisions whose
        run awaits approval."""
        if denied := refused(request, operator_auth):
            return denied
        waiting = await service.store.approvals.awaiting()
        return JSONResponse(
            {
                **await leases.guard_state(service.store),
                "awaiting_approval": [
                    {"decision_id": row["id"], "flow_run_id": row["flow_run_id"]} for row in waiting
                ],
            }
        )

    @app.get("/api/v1/approvals")
    async def list_approvals(request: Request) -> JSONResponse:
        """The runs waiting for approval: the alert, the rule and what will be done."""
        if denied := refused(request, operator_auth):
            return denied
        return JSONResponse(
            {
                "approvals": [
                    _waiting(row) for row in linked(await service.store.approvals.awaiting())
                ]
            }
        )

    async def answer(
        request: Request, flow_run_id: str, approved: bool, comment: str
    ) -> JSONResponse:
        """Approve or reject a waiting run as the calling operator; the decision log says who."""
        waiting = [
            row
            for row in await service.store.approvals.awaiting()
            if row["flow_run_id"] == flow_run_id.lower()
        ]
        if not waiting:
            return _error(
                404, f"no flow run {flow_run_id} is awaiting approval", field="flow_run_id"
            )
        if waiting[0]["approval_state"] == ANSWERING:
            return _error(409, f"flow run {flow_run_id} is being answered by someone else")
        who: Operator = request.state.operator
        asked = waiting[0]["rule"] == MANUAL_RULE and waiting[0]["labels"].get("requested_by")
        if asked == who.name and who.name not in SHARED_IDENTITIES:
            # A run started by hand with approval waits for a second person.
            return _error(409, f"{who.name} asked for this run: another person must answer")
        if service.dispatcher is None:
            return _error(503, "no Prefect server here to send the answer to")
        audit(
            request,
            "%s flow run %s: %r",
            "approves" if approved else "rejects",
            flow_run_id,
            comment,
        )
        try:
            approval = await service.dispatcher.answer_approval(
                flow_run_id.lower(), approved, who.name, comment
            )
        except ApprovalError as exc:
            return _error(409, str(exc))
        except DispatchError as exc:
            return _error(503, str(exc))
        return JSONResponse({"decision_id": waiting[0]["id"], "approval": approval})

    @app.post(
        "/api/v1/approvals/{flow_run_id}/approve", openapi_extra=_documented_body(ApproveRequest)
    )
    async def approve(
        request: Request, flow_run_id: str = Path(pattern=FLOW_RUN_ID)
    ) -> JSONResponse:
        """Approve a waiting run; recorded with the operator's name."""
        if denied := refused(request, operator_auth, "approve"):
            return denied
        body = await json_body(request, ApproveRequest, "an approval")
        if isinstance(body, JSONResponse):
            return body
        return await answer(request, flow_run_id, True, body.comment)

    @app.post(
        "/api/v1/approvals/{flow_run_id}/reject", openapi_extra=_documented_body(RejectRequest)
    )
    async def reject(
        request: Request, flow_run_id: str = Path(pattern=FLOW_RUN_ID)
    ) -> JSONResponse:
        """Reject a waiting run, saying why; the run ends Cancelled, recorded with the name."""
        if denied := refused(request, operator_auth, "approve"):
            return denied
        body = await json_body(request, RejectRequest, "a rejection")
        if isinstance(body, JSONResponse):
            return body
        return await answer(request, flow_run_id, False, body.reason)

    @app.post("/-/reload")
    async def reload(request: Request) -> JSONResponse:
        """Reload rules and the catalog; on an error the old ones stay and the error says why."""
        if denied := refused(request, operator_auth, "operate"):
            return denied
        audit(request, "reloads the rules")
        try:
            book = await service.reload()
        except DocumentError as exc:
            return _error(400, str(exc), file=exc.file, line=exc.line)
        except StoreUnavailable:
            return _error(503, "store unavailable; the previous rules stay in force")
        return JSONResponse({"status": "reloaded", "rules": len(book.rules)})

    @app.get("/api/v1/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        """This API's OpenAPI document."""
        if denied := refused(request, operator_auth):
            return denied
        return JSONResponse(app.openapi())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when the store answers, the engine loop runs and the flows are loaded."""
        store_problem = await service.store.problem()
        checks = {
            "store": store_problem is None,
            "engine": service.engine_alive,
            "leader": service.leading,
            "flows": service.flows_loaded,
        }
        if service.dispatcher is not None and service.leading:
            checks["prefect"] = service.dispatcher.prefect_reachable
        ready = checks["store"] and checks["engine"] and checks["flows"]
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if store_problem is not None:
            body["store_problem"] = store_problem
        return JSONResponse(
            body,
            status_code=200 if ready else 503,
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus exposition format."""
        with contextlib.suppress(StoreUnavailable):
            metrics.INBOX_BACKLOG.set(await service.store.inbox.backlog())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
