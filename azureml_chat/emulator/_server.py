"""The aiohttp server: auth and routing like Azure's front end, then the dialect handlers, faults and the log.

Every decision about *what* to answer lives in the pure modules (``_chat``, ``_score``, ``_answers``,
``_faults``); this module only moves bytes and keeps the mutable state (armed faults, reply counters, log).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TextIO, TypeAlias

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler

from ._answers import control_faults, control_text
from ._chat import BadRequest, answer_chat, completion_body, parse_chat_request, stream_chunks
from ._completions import answer_completion, completion_chunks, parse_completion_request, text_body
from ._deployments import Deployment
from ._errors import EmulatorError, FaultSpecError, platform_error, score_error
from ._faults import Fault, FaultSchedule, error_response, first_match, parse_faults
from ._records import RecordedRequest, RequestLog, redact_headers
from ._score import answer_score, parse_score_request
from ._thread import EmulatorThread
from ._wire import bind, close_connection, json_body, json_error, sse

__all__ = ["CHAT_PATHS", "COMPLETIONS_PATHS", "DEPLOYMENT_HEADER", "FAULT_HEADER", "INFO_PATHS", "Emulator"]

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions", "/models/chat/completions")
COMPLETIONS_PATHS = ("/v1/completions", "/completions")
INFO_PATHS = ("/info", "/models/info")
DEPLOYMENT_HEADER = "azureml-model-deployment"
FAULT_HEADER = "x-emulator-fault"
# Which request dialect a handler speaks: /score in a non-OpenAI family's shape, chat or text completions.
Dialect: TypeAlias = Literal["score", "chat", "completions"]
_CLIENT_REQUEST_ID = "x-ms-client-request-id"
_EXCHANGE = "azureml_chat.emulator.exchange"
# Bodies with base64 images run to megabytes; aiohttp's default 1 MiB limit would turn them into 413s.
_MAX_BODY = 64 * 1024 * 1024
# Enough for any functional test to see all its requests, small enough (tens of MB at most) that a soak test
# or a CLI emulator left running for days does not grow without bound.
DEFAULT_MAX_RECORDS = 10_000
# Open streams get this long to finish when the emulator stops; tests should not wait aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT = 1.0
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
    recorded: bool = False


class Emulator:
    """An Azure ML online endpoint on loopback: both dialects, deterministic answers, faults on demand.

    Args:
        key: the endpoint key clients must send (``Authorization: Bearer <key>`` or ``api-key: <key>``);
            ``None`` accepts any request.
        deployments: the deployments behind the endpoint (default: one ``llama`` deployment named ``default``).
        default_deployment: the deployment that serves requests without ``azureml-model-deployment``
            (default: the first).
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        on_request: called with each :class:`RecordedRequest` as it is recorded (on the server's loop).
        max_records: how many recorded requests to keep, the oldest dropped first (``None``: all).

    Example::

        async with Emulator(key="test-key") as emu:
            ...  # point a client at emu.url (or emu.score_url / emu.chat_url) with emu.key
            assert emu.requests[-1].status == 200
    """

    def __init__(
        self,
        key: str | None = None,
        *,
        deployments: Iterable[Deployment] | None = None,
        default_deployment: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[RecordedRequest], None] | None = None,
        max_records: int | None = DEFAULT_MAX_RECORDS,
    ) -> None:
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("key must be a non-empty string, or None to accept any request")
        deployed = tuple(deployments) if deployments is not None else (Deployment("default"),)
        if not deployed:
            raise ValueError("an emulator needs at least one deployment")
        self._deployments = {d.name: d for d in deployed}
        if len(self._deployments) != len(deployed):
            raise ValueError(f"deployment names must be unique, got {[d.name for d in deployed]}")
        self._default = deployed[0].name if default_deployment is None else default_deployment
        self._deployment(self._default)
        self._key = key
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._schedules = {d.name: FaultSchedule(d.faults) for d in deployed}
        self._replies_used = dict.fromkeys(self._deployments, 0)
        self._log = RequestLog(max_records, on_request)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    # -- configuration and state ------------------------------------------------------------------------

    @property
    def key(self) -> str | None:
        """The key clients must send, or ``None`` when any request is accepted."""
        return self._key

    @property
    def host(self) -> str:
        """The bound address."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for).

        Raises:
            EmulatorError: the emulator is not running.
        """
        if self._bound_port is None:
            raise EmulatorError("the emulator is not running: call start() (or use 'async with') first")
        return self._bound_port

    @property
    def url(self) -> str:
        """The endpoint's base URL, e.g. ``http://127.0.0.1:51234``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def score_url(self) -> str:
        """The dedicated-endpoint scoring URL (``/score``)."""
        return self.url + "/score"

    @property
    def chat_url(self) -> str:
        """The OpenAI-compatible chat-completions URL (``/v1/chat/completions``)."""
        return self.url + CHAT_PATHS[0]

    @property
    def completions_url(self) -> str:
        """The OpenAI-compatible text-completions URL (``/v1/completions``)."""
        return self.url + COMPLETIONS_PATHS[0]

    @property
    def info_url(self) -> str:
        """The model-information URL (``/info``)."""
        return self.url + INFO_PATHS[0]

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._runner is not None

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        """The deployments behind the endpoint."""
        return tuple(self._deployments.values())

    @property
    def default_deployment(self) -> str:
        """The name of the deployment that serves requests without ``azureml-model-deployment``."""
        return self._default

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far (at most ``max_records``), oldest first; a copy, auth headers redacted."""
        return self._log.snapshot()

    def clear(self) -> None:
        """Forget the recorded requests."""
        self._log.clear()

    def add_fault(self, fault: Fault | str, *, deployment: str | None = None) -> None:
        """Arm a fault (or a ``;``-separated spec of several) on a deployment, after those already armed.

        Args:
            fault: a :class:`Fault` or a spec such as ``"status=503,times=2"``.
            deployment: the deployment's name; ``None`` is the default deployment.

        Raises:
            FaultSpecError: the spec does not parse.
            ValueError: no deployment has that name.
        """
        schedule = self._schedules[self._deployment(deployment).name]
        for item in (fault,) if isinstance(fault, Fault) else parse_faults(fault):
            schedule.add(item)

    def clear_faults(self, *, deployment: str | None = None) -> None:
        """Disarm every fault of a deployment (``None``: the default deployment)."""
        self._schedules[self._deployment(deployment).name].clear()

    def faults(self, *, deployment: str | None = None) -> tuple[Fault, ...]:
        """The faults armed on a deployment (``None``: the default one), ``times`` showing the uses left."""
        return self._schedules[self._deployment(deployment).name].pending()

    def reset(self) -> None:
        """Back to the configured state: no records, each deployment's own faults, replies from the first."""
        self.clear()
        with self._lock:
            for deployment in self._deployments.values():
                self._schedules[deployment.name] = FaultSchedule(deployment.faults)
                self._replies_used[deployment.name] = 0

    def _deployment(self, name: str | None) -> Deployment:
        found = self._deployments.get(self._default if name is None else name)
        if found is None:
            raise ValueError(f"unknown deployment {name!r}; known: {', '.join(self._deployments)}")
        return found

    def _next_reply(self, deployment: Deployment) -> str | None:
        if deployment.replies is None:
            return None
        with self._lock:
            used = self._replies_used[deployment.name]
            self._replies_used[deployment.name] = used + 1
        return deployment.replies[used % len(deployment.replies)]

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            PortInUseError: the port is taken.
            EmulatorError: the address cannot be bound, or the emulator is already running.
        """
        if self._runner is not None:
            raise EmulatorError(f"the emulator is already running at {self.url}")
        sock = bind(self._host, self._port)
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        try:
            await runner.setup()
            # aiohttp's default backlog (128) drops the SYNs of a burst of 256 new connections, which then
            # arrive a second late (TCP retransmit) and distort load and rate-limit tests.
            await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner, self._bound_port = runner, sock.getsockname()[1]

    async def stop(self) -> None:
        """Stop serving (open streams get a second to finish). Safe to call twice."""
        runner, self._runner, self._bound_port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self, *, out: TextIO | None = None) -> None:
        """Start, print the URL and key to ``out`` (default stdout), and serve until cancelled."""
        await self.start()
        try:
            print(self.banner(), file=out or sys.stdout, flush=True)
            await asyncio.get_running_loop().create_future()
        finally:
            await self.stop()

    def banner(self) -> str:
        """What :meth:`serve_forever` prints: the URL, the key, the deployments and the routes."""
        key = (
            f"key: {self._key}  (send 'Authorization: Bearer <key>' or 'api-key: <key>')"
            if self._key
            else "key: none (any key is accepted)"
        )
        deployments = ", ".join(
            f"{d.name} ({d.family}, {d.model}){' [default]' if d.name == self._default else ''}"
            for d in self._deployments.values()
        )
        return "\n".join(
            [
                f"azureml-chat emulator listening on {self.url}",
                f"  {key}",
                f"  deployments: {deployments}",
                f"  routes: POST /score, POST {', '.join(CHAT_PATHS + COMPLETIONS_PATHS)}, GET /info",
                "Press Ctrl-C to stop.",
            ]
        )

    def start_in_thread(self) -> EmulatorThread[Emulator]:
        """Start serving on a private event loop in a background thread; stop it with ``.stop()`` or ``with``.

        Raises:
            PortInUseError: the port is taken.
        """
        thread = EmulatorThread(self)
        thread.start()
        return thread

    # -- HTTP -------------------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
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
        name = request.headers.get(DEPLOYMENT_HEADER) or self._default
        exchange.deployment = self._deployments.get(name)
        if exchange.deployment is None:
            known = ", ".join(self._deployments)
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
        if self._key is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        offered = [token.strip()] if scheme.lower() == "bearer" else []
        offered += request.headers.getall("api-key", [])
        return any(hmac.compare_digest(item.encode(), self._key.encode()) for item in offered)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        exchange: _Exchange | None = request.get(_EXCHANGE)
        response.headers["x-request-id"] = exchange.request_id if exchange else str(uuid.uuid4())
        client_id = request.headers.get(_CLIENT_REQUEST_ID)
        if client_id is not None:
            response.headers[_CLIENT_REQUEST_ID] = _CLIENT_ID_JUNK.sub("", client_id)[:_CLIENT_ID_MAX]
        if exchange is not None:
            if exchange.deployment is not None:
                response.headers[DEPLOYMENT_HEADER] = exchange.deployment.name
            self._record(request, exchange, response.status)

    def _record(self, request: web.Request, exchange: _Exchange, status: int | None) -> None:
        if exchange.recorded:
            return
        exchange.recorded = True
        self._log.append(
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
        try:
            specs = [*request.headers.getall(FAULT_HEADER, []), *control_faults(control_text(body))[1]]
            asked = parse_faults(";".join(specs))
        except FaultSpecError as exc:
            return json_error(400, platform_error("InvalidFaultSpec", str(exc)))
        # A fault asked for by the request replaces the deployment's armed ones, which stay armed.
        schedule = self._schedules[deployment.name]
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
            if body is None:
                raise BadRequest("the request body is not valid JSON")
            if dialect == "chat":
                return await self._chat(request, exchange, deployment, fault)
            if dialect == "completions":
                return await self._complete(request, exchange, deployment, fault)
            answer = answer_score(
                deployment.family,
                parse_score_request(deployment.family, body),
                reply=lambda: self._next_reply(deployment),
            )
        except BadRequest as exc:
            if openai:
                error = {
                    "code": "BadRequest",
                    "message": exc.message,
                    "param": exc.param,
                    "type": "invalid_request_error",
                }
                return json_error(400, {"error": error})
            return json_error(400, score_error(exc.message))
        return json_body(answer, fault)

    async def _chat(
        self, request: web.Request, exchange: _Exchange, deployment: Deployment, fault: Fault | None
    ) -> web.StreamResponse:
        refuse_extras = request.headers.get("extra-parameters", "").strip().lower() == "error"
        chat = parse_chat_request(exchange.body, refuse_extras=refuse_extras)
        answer = answer_chat(
            chat, reply=lambda: self._next_reply(deployment), call_id=f"call_{uuid.uuid4().hex[:24]}"
        )
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not chat.stream:
            body = completion_body(
                answer, completion_id=completion_id, created=created, model=deployment.model
            )
            return json_body(body, fault)
        chunks = stream_chunks(answer, completion_id=completion_id, created=created, model=deployment.model)
        return await sse(request, [json.dumps(chunk) for chunk in chunks], fault)

    async def _complete(
        self, request: web.Request, exchange: _Exchange, deployment: Deployment, fault: Fault | None
    ) -> web.StreamResponse:
        refuse_extras = request.headers.get("extra-parameters", "").strip().lower() == "error"
        completion = parse_completion_request(exchange.body, refuse_extras=refuse_extras)
        answers = answer_completion(completion, reply=lambda: self._next_reply(deployment))
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if not completion.stream:
            body = text_body(answers, completion_id=completion_id, created=created, model=deployment.model)
            return json_body(body, fault)
        chunks = completion_chunks(
            answers, completion_id=completion_id, created=created, model=deployment.model
        )
        return await sse(request, [json.dumps(chunk) for chunk in chunks], fault)


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
