"""The emulator's aiohttp application: auth and routing like Azure's front end, the model-inference rules
(``api-version``), the quota, faults, then the dialect handlers and the request log.

Every decision about *what* to answer lives in the pure modules (``_azure``, ``_quota``, ``_chat``,
``_completions``, ``_score``, ``_answers``, ``_faults``), gathered per dialect by ``_replies``, and the bytes
go out through ``_wire``; this module only routes. The mutable state it reads and updates (armed faults, reply
counters, the quota, the prompt cache, the log) belongs to the :class:`Emulator`, which builds a
:class:`WebFrontEnd` over it at each start; imports run one way, from the emulator's module to this one.

A request to a chat, text-completions or ``/score`` route goes: key (401) -> deployment (404) ->
``api-version`` on the model-inference routes (400) -> quota (429) -> fault -> body (400) -> answer. Every
answer from the quota on carries the ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler

from ._answers import control_faults, control_text
from ._azure import EXTRA_PARAMETERS_HEADER, api_version_problem, extra_parameters
from ._cache import PromptCache
from ._deployments import Deployment
from ._errors import BadRequest, FaultSpecError, openai_error, platform_error, score_error
from ._faults import Fault, FaultSchedule, error_response, first_match, parse_faults
from ._quota import Admission, QuotaWindow, refusal
from ._records import RecordedRequest, RequestLog, redact_headers
from ._replies import Reply, chat_reply, completion_reply, score_reply
from ._wire import close_connection, json_body, json_error, sse

__all__ = [
    "CHAT_PATHS",
    "COMPLETIONS_PATHS",
    "DEPLOYMENT_HEADER",
    "FAULT_HEADER",
    "INFO_PATHS",
    "WebFrontEnd",
]

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions", "/models/chat/completions")
COMPLETIONS_PATHS = ("/v1/completions", "/completions", "/models/completions")
INFO_PATHS = ("/info", "/models/info")
DEPLOYMENT_HEADER = "azureml-model-deployment"
FAULT_HEADER = "x-emulator-fault"
# Which request dialect a handler speaks: /score in a non-OpenAI family's shape, chat or text completions.
Dialect: TypeAlias = Literal["score", "chat", "completions"]
_CLIENT_REQUEST_ID = "x-ms-client-request-id"
# Bodies with base64 images run to megabytes; aiohttp's default 1 MiB limit would turn them into 413s.
_MAX_BODY = 64 * 1024 * 1024
# The Azure ML front end keeps only these characters of x-ms-client-request-id, and 40 of them (section 1.7).
_CLIENT_ID_JUNK = re.compile(r"[^A-Za-z0-9_-]")
_CLIENT_ID_MAX = 40


@attrs.define
class _Exchange:
    """What the emulator knows about one request as it handles it (mutable, request-scoped)."""

    request_id: str
    text: str
    body: Any
    time: float
    deployment: Deployment | None = None
    stream: bool = False
    fault: Fault | None = None
    admission: Admission | None = None
    recorded: bool = False


# Per-request state under a typed key: aiohttp 3.14 warns about plain string keys (web.RequestKey is new there),
# and test suites that turn warnings into errors would see a 500. Older aiohttp takes the string quietly.
_EXCHANGE: Any = (
    web.RequestKey("azureml_chat.emulator.exchange", _Exchange)
    if hasattr(web, "RequestKey")
    else "azureml_chat.emulator.exchange"
)


@attrs.frozen(eq=False)
class WebFrontEnd:
    """The HTTP side of an emulator: Azure's front end and the dialect handlers, over the emulator's state
    (shared, never copied).

    Args:
        key: the key clients must send; ``None`` accepts any request.
        deployments: the deployments behind the endpoint, by name.
        default: the name of the deployment that serves requests without ``azureml-model-deployment``.
        schedules: each deployment's armed faults, by deployment name; looked up per request, so a schedule
            the emulator replaces while serving (``reset()``) takes effect at once.
        next_reply: a deployment's next scripted reply (``None``: echo the request).
        log: where each request is recorded.
        quota: the endpoint's quota and its count.
        cache: the prompt prefixes seen, for ``cached_tokens``.
    """

    key: str | None
    deployments: Mapping[str, Deployment]
    default: str
    schedules: Mapping[str, FaultSchedule]
    next_reply: Callable[[Deployment], str | None]
    log: RequestLog
    quota: QuotaWindow
    cache: PromptCache

    def app(self) -> web.Application:
        """A new application routing to these handlers."""
        app = web.Application(middlewares=[self._front_end], client_max_size=_MAX_BODY)
        app.router.add_post("/score", self._handle_score)
        for path in CHAT_PATHS:
            app.router.add_post(path, self._handle_chat)
        for path in COMPLETIONS_PATHS:
            app.router.add_post(path, self._handle_completions)
        for path in INFO_PATHS:
            app.router.add_get(path, self._handle_info)
        app.on_response_prepare.append(self._on_prepare)
        return app

    @web.middleware
    async def _front_end(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Azure's front end: read the body, check the key, route to a deployment."""
        text = (await request.read()).decode("utf-8", "replace")
        exchange = _Exchange(
            request_id=str(uuid.uuid4()), text=text, body=_json_or_none(text), time=time.time()
        )
        request[_EXCHANGE] = exchange
        if not self._authorized(request):
            message = (
                "Key based authentication failed: send the endpoint key as 'Authorization: Bearer <key>'."
            )
            headers = {"WWW-Authenticate": "Bearer", "x-ms-error-code": "Unauthorized"}
            return json_error(401, platform_error("Unauthorized", message), headers)
        name = request.headers.get(DEPLOYMENT_HEADER) or self.default
        exchange.deployment = self.deployments.get(name)
        if exchange.deployment is None:
            known = ", ".join(self.deployments)
            message = f"No deployment named {name!r} on this endpoint. Known deployments: {known}."
            return json_error(
                404, platform_error("DeploymentNotFound", message), {"x-ms-error-code": "NotFound"}
            )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status not in (404, 405):
                raise
            code = "NotFound" if exc.status == 404 else "MethodNotAllowed"
            message = f"{request.method} {request.path} is not a route of this endpoint"
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            return json_error(exc.status, platform_error(code, message), allow)

    def _authorized(self, request: web.Request) -> bool:
        if self.key is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        offered = [token.strip()] if scheme.lower() == "bearer" else []
        offered += request.headers.getall("api-key", [])
        return any(hmac.compare_digest(item.encode(), self.key.encode()) for item in offered)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        exchange: _Exchange | None = request.get(_EXCHANGE)
        response.headers["x-request-id"] = exchange.request_id if exchange else str(uuid.uuid4())
        client_id = request.headers.get(_CLIENT_REQUEST_ID)
        if client_id is not None:
            response.headers[_CLIENT_REQUEST_ID] = _CLIENT_ID_JUNK.sub("", client_id)[:_CLIENT_ID_MAX]
        if exchange is not None:
            if exchange.deployment is not None:
                response.headers[DEPLOYMENT_HEADER] = exchange.deployment.name
            if exchange.admission is not None and exchange.admission.admitted:
                # As of the answer, so a stream's headers count its own tokens (a refusal sends its own).
                response.headers.update(self.quota.headers())
            self._record(request, exchange, response.status)

    def _record(self, request: web.Request, exchange: _Exchange, status: int | None) -> None:
        if exchange.recorded:
            return
        exchange.recorded = True
        self.log.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=redact_headers(request.headers.items()),
                body=exchange.body,
                text=exchange.text,
                deployment=exchange.deployment.name if exchange.deployment else None,
                status=status,
                stream=exchange.stream,
                fault=exchange.fault,
                time=exchange.time,
            )
        )

    async def _handle_info(self, request: web.Request) -> web.StreamResponse:
        deployment = _exchange(request).deployment
        assert deployment is not None
        kind = "chat-completion" if deployment.family in ("llama", "mistral", "openai") else "text-generation"
        return web.json_response(
            {"model_name": deployment.model, "model_type": kind, "model_provider_name": deployment.provider}
        )

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    async def _handle_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "completions")

    async def _handle_score(self, request: web.Request) -> web.StreamResponse:
        deployment = _exchange(request).deployment
        assert deployment is not None
        return await self._answer(request, "chat" if deployment.family == "openai" else "score")

    async def _answer(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        exchange = _exchange(request)
        deployment, body = exchange.deployment, exchange.body
        assert deployment is not None
        openai = dialect != "score"
        exchange.stream = openai and isinstance(body, Mapping) and body.get("stream") is True
        problem = api_version_problem(request.path, request.query)
        if problem is not None:
            return json_error(400, platform_error(*problem), {"x-ms-error-code": problem[0]})
        exchange.admission = admission = self.quota.admit()
        if not admission.admitted:
            headers, error = refusal(self.quota.quota, admission)
            return json_error(429, error, headers)
        try:
            specs = [*request.headers.getall(FAULT_HEADER, []), *control_faults(control_text(body))[1]]
            asked = parse_faults(";".join(specs))
        except FaultSpecError as exc:
            return json_error(400, platform_error("InvalidFaultSpec", str(exc)))
        # A fault asked for by the request replaces the deployment's armed ones, which stay armed.
        schedule = self.schedules[deployment.name]
        fault = first_match(asked, stream=exchange.stream) if asked else schedule.take(stream=exchange.stream)
        exchange.fault = fault
        if fault is not None:
            await asyncio.sleep(fault.latency)
            if fault.disconnect:
                self._record(request, exchange, None)
                close_connection(request)
                return web.Response()
            if fault.status is not None:
                status, headers, error = error_response(fault)
                return json_error(status, error, headers)
        try:
            reply = self._reply(request, dialect, deployment, body)
        except BadRequest as exc:
            return json_error(400, openai_error(exc) if openai else score_error(exc.message))
        self.quota.charge(admission, reply.tokens)
        if reply.events is not None:
            return await sse(request, reply.events, fault)
        return json_body(reply.body, fault)

    def _reply(self, request: web.Request, dialect: Dialect, deployment: Deployment, body: Any) -> Reply:
        if body is None:
            raise BadRequest("the request body is not valid JSON")
        next_reply = functools.partial(self.next_reply, deployment)
        if dialect == "score":
            return score_reply(body, deployment=deployment, reply=next_reply)
        policy = extra_parameters(request.headers.get(EXTRA_PARAMETERS_HEADER), path=request.path)
        if dialect == "completions":
            return completion_reply(
                body, path=request.path, policy=policy, deployment=deployment, reply=next_reply
            )
        return chat_reply(
            body, path=request.path, policy=policy, deployment=deployment, reply=next_reply, cache=self.cache
        )


def _exchange(request: web.Request) -> _Exchange:
    exchange: _Exchange = request[_EXCHANGE]
    return exchange


def _json_or_none(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
