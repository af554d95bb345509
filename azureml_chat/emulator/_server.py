"""The emulator: its state (deployments, armed faults, reply counters, the quota, the prompt cache, the request
log) and its lifecycle.

The HTTP side (auth, routing, the dialect handlers) is the application of :mod:`._app`, built over this
state at each :meth:`Emulator.start`; that module never imports this one.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TextIO

from aiohttp import web

from ._app import CHAT_PATHS, COMPLETIONS_PATHS, INFO_PATHS, WebFrontEnd
from ._banner import describe
from ._cache import PromptCache
from ._deployments import Deployment
from ._errors import EmulatorError
from ._faults import Fault, FaultSchedule, parse_faults
from ._quota import Quota, QuotaUsage, QuotaWindow
from ._records import RecordedRequest, RequestLog
from ._thread import EmulatorThread
from ._wire import bind

__all__ = ["DEFAULT_MAX_RECORDS", "Emulator"]

# Enough for any functional test to see all its requests, small enough (tens of MB at most) that a soak test
# or a CLI emulator left running for days does not grow without bound.
DEFAULT_MAX_RECORDS = 10_000
# Open streams get this long to finish when the emulator stops; tests should not wait aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT = 1.0


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
        quota: the rate quota of the chat, text-completions and ``/score`` routes (requests and tokens per
            fixed window; past it, 429s). ``None``: a quota so large no load spends it, whose ``x-ratelimit-*``
            headers still count truthfully (see :class:`Quota`).

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
        quota: Quota | None = None,
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
        if quota is not None and not isinstance(quota, Quota):
            raise TypeError(f"quota must be a Quota (or None), got {type(quota).__name__}")
        self._quota = quota
        self._window = QuotaWindow(Quota() if quota is None else quota)
        self._cache = PromptCache()
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

    @property
    def quota(self) -> Quota | None:
        """The configured quota (``None``: the default one no load spends)."""
        return self._quota

    @property
    def quota_usage(self) -> QuotaUsage:
        """What the quota has admitted and refused since the start (or :meth:`reset`), and the current
        window's requests and tokens."""
        return self._window.usage()

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
        """Back to the configured state: no records, each deployment's own faults, replies from the first, a
        fresh quota (no window open) and an empty prompt cache."""
        self.clear()
        self._window.reset()
        self._cache.clear()
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
        app = WebFrontEnd(
            key=self._key,
            deployments=self._deployments,
            default=self._default,
            schedules=self._schedules,
            next_reply=self._next_reply,
            log=self._log,
            quota=self._window,
            cache=self._cache,
        ).app()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
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
        """What :meth:`serve_forever` prints: the URL, the key, the deployments, the routes and the quota."""
        return describe(
            url=self.url,
            key=self._key,
            deployments=self._deployments.values(),
            default=self._default,
            quota=self._quota,
        )

    def start_in_thread(self) -> EmulatorThread[Emulator]:
        """Start serving on a private event loop in a background thread; stop it with ``.stop()`` or ``with``.

        Raises:
            PortInUseError: the port is taken.
        """
        thread = EmulatorThread(self)
        thread.start()
        return thread
