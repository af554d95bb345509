"""Chat over the rows of a table, batch by batch, in a worker process: what a Ray Data actor and a Spark task run.

:class:`ChatRows` is engine-neutral (it imports neither ray nor pandas at module level). It is built on the
driver, where every option is checked at once (a typo fails before any job starts), then pickled to the
workers. In a worker it builds one :class:`AsyncChatClient` lazily, on the event loop that runs the batches
(aiohttp and redis bind to their loop), and sends every row of every batch under one semaphore of
``per_worker_concurrency`` calls, however many batches the engine runs at once. Each row becomes its answer
or its error: a row never fails the batch, because an engine that retries a failed batch (Ray, Spark) would
send again every call of it that had succeeded. Only a ``BaseException`` (cancellation) propagates.

Output columns, added after the input columns, with the same types in every batch (an all-``None`` column
keeps its type, so batches concatenate)::

    content            string   the answer's text (None on error)
    reasoning          string   the model's reasoning kept apart from the text, when it has one
    finish_reason      string
    prompt_tokens      int64    as the endpoint reported (None when it did not)
    completion_tokens  int64
    request_id         string   the answer's x-request-id, else our x-ms-client-request-id
    attempts           int64    HTTP requests the row sent, its retries included (0: it failed before sending)
    latency_s          float64  wall time of the row's call, retries and waits included (not its wait for a slot)
    error_type         string   the error's class name (None on success)
    error              string   the error's message (None on success)

A row's messages are a list of messages (dicts in the OpenAI shape; ``None`` fields, which Arrow adds to
structs, are dropped) or a JSON string holding one (a JSON string value is one user message, as in ``chat``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, TypedDict, TypeVar, Unpack

from . import _defaults
from ._batch import check_concurrency
from ._client import AsyncChatClient
from ._config import Secret, Timeout
from ._endpoint import Endpoint
from ._errors import (
    APIStatusError,
    AzureMLChatError,
    ClientClosedError,
    ConfigurationError,
    InvalidRequestError,
)
from ._params import check_names
from ._ratelimit import RateLimit
from ._retry import RetryPolicy
from ._serialization import CONVERSATION, describe_type, is_conversation
from .formatters import ContentFormatter

__all__ = ["OUTPUT_COLUMNS", "OUTPUT_TYPES", "ChatRows", "WorkerOptions", "spark_schema"]

PER_WORKER_CONCURRENCY = _defaults.PER_WORKER_CONCURRENCY

# (name, Arrow type, pyspark.sql.types class) of each added column, in order.
_COLUMNS = (
    ("content", "string", "StringType"),
    ("reasoning", "string", "StringType"),
    ("finish_reason", "string", "StringType"),
    ("prompt_tokens", "int64", "LongType"),
    ("completion_tokens", "int64", "LongType"),
    ("request_id", "string", "StringType"),
    ("attempts", "int64", "LongType"),
    ("latency_s", "float64", "DoubleType"),
    ("error_type", "string", "StringType"),
    ("error", "string", "StringType"),
)
OUTPUT_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _COLUMNS)
# Each added column's Arrow type (``pyarrow.type_for_alias`` names), for engines that want a schema up front.
OUTPUT_TYPES: Mapping[str, str] = MappingProxyType({name: arrow for name, arrow, _ in _COLUMNS})
# pandas dtypes that keep their type when every value is missing (a plain object column would not).
_PANDAS_DTYPES = {"string": "string", "int64": "Int64", "float64": "float64"}

BatchT = TypeVar("BatchT")


class WorkerOptions(TypedDict, total=False):
    """The client options a worker's client is built from: the constructor's, less what cannot cross a process
    boundary (``session``, ``transport``: they are bound to the driver's loop) and ``credential`` (a factory
    instead, see :class:`ChatRows`)."""

    endpoint_url: str | None
    api_key: str | Secret | None
    endpoints: Sequence[Endpoint] | None
    endpoint_type: str | None
    formatter: str | ContentFormatter | None
    deployment: str | None
    timeout: float | Timeout | None
    max_retries: int | None
    model_kwargs: Mapping[str, Any] | None
    headers: Mapping[str, str] | None
    retry: RetryPolicy | None
    auth_header: str
    extra_parameters: str | None
    max_connections: int | None
    allow_insecure_http: bool
    max_event_bytes: int
    credential_scope: str
    rate_limit: RateLimit | None
    split_reasoning: bool
    tracing: bool


class _Row(NamedTuple):
    """One row's outcome, in the order of ``_COLUMNS``."""

    content: str | None
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    request_id: str | None
    attempts: int
    latency_s: float
    error_type: str | None
    error: str | None


class ChatRows:
    """Sends the conversation of every row of a batch and adds the answer's columns; one client per worker.

    Use it through :func:`azureml_chat.ray.map_chat`, as Spark's ``mapInPandas`` function
    (:meth:`map_in_pandas`, with :func:`spark_schema`), or as any engine's batch function: ``await rows(batch)``
    takes a ``pyarrow.Table`` or a ``pandas.DataFrame`` and returns the same kind, the input columns kept and
    :data:`OUTPUT_COLUMNS` added, one output row per input row in input order. Close it with :meth:`aclose`
    on the loop that ran the batches (the Spark recipe does; the Ray actor does when Ray ends it gracefully).

    Args:
        messages_column: the column holding each row's conversation.
        per_worker_concurrency: calls in flight in this worker, across every batch it runs at once.
        credential: a zero-argument factory that builds the Entra ID credential (or token callable) in the
            worker, called once per worker, such as ``functools.partial(DefaultAzureCredential)``; never a live
            credential (its locks, sessions and token cache do not cross processes). A credential it builds
            is closed with the client.
        chat_options: keyword arguments of :meth:`AsyncChatClient.chat` for every row (``temperature``,
            ``max_tokens``, ``timeout``, any model parameter), checked for misspelt names at once.
        **client_options: the client's constructor options (:class:`WorkerOptions`).

    Raises:
        ConfigurationError: a client option the client refuses, a live credential, or ``session=`` /
            ``transport=`` (a worker builds its own).
        InvalidRequestError: a misspelt ``chat_options`` name, or a ``per_worker_concurrency`` below 1.
    """

    def __init__(
        self,
        *,
        messages_column: str = "messages",
        per_worker_concurrency: int = PER_WORKER_CONCURRENCY,
        credential: Callable[[], Any] | None = None,
        chat_options: Mapping[str, Any] | None = None,
        **client_options: Unpack[WorkerOptions],
    ) -> None:
        if not isinstance(messages_column, str) or not messages_column:
            raise ConfigurationError(f"messages_column must be a column name, got {messages_column!r}")
        # Only reachable around the type checker (a dict spread), as a misspelt option is too.
        for name in ("session", "transport"):
            if name in client_options:
                raise ConfigurationError(
                    f"{name}= cannot cross to a worker: each worker builds its own client and connection pool"
                )
        unknown = sorted(set(client_options) - set(WorkerOptions.__annotations__))
        if unknown:
            raise ConfigurationError(
                f"unknown client option(s) {', '.join(unknown)}; the client's constructor takes "
                f"{', '.join(sorted(WorkerOptions.__annotations__))}"
            )
        self.messages_column = messages_column
        self.per_worker_concurrency = check_concurrency(per_worker_concurrency)
        self.credential = _check_factory(credential)
        self.chat_options = _check_chat_options(chat_options)
        api_key = client_options.get("api_key")
        if isinstance(api_key, str):  # held masked in reprs and logs, on the driver and in the workers
            client_options["api_key"] = Secret(api_key)
        self.client_options = client_options
        self._validate()
        self._reset()

    def _reset(self) -> None:
        self._client: AsyncChatClient | None = None
        self._built: Any = None  # what the credential factory built
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Only the configuration crosses: a worker's client, pool and semaphore belong to its loop.
        keep = ("messages_column", "per_worker_concurrency", "credential", "chat_options", "client_options")
        return {name: self.__dict__[name] for name in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        where = self.client_options.get("endpoint_url") or (
            "endpoints" if self.client_options.get("endpoints") else "AZUREML_ENDPOINT_URL"
        )
        return (
            f"{type(self).__name__}(messages_column={self.messages_column!r}, "
            f"per_worker_concurrency={self.per_worker_concurrency}, endpoint={where!r})"
        )

    # --- batches --------------------------------------------------------------------------------------

    async def __call__(self, batch: BatchT) -> BatchT:
        """The batch (a ``pyarrow.Table`` or ``pandas.DataFrame``) with the answer's columns added.

        Raises:
            ConfigurationError: the batch has no ``messages_column``, or already has an output column.
            TypeError: the batch is neither a pyarrow Table nor a pandas DataFrame.
        """
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(batch, pandas.DataFrame):
            return await self.pandas_batch(batch)  # type: ignore[no-any-return]  # pandas is untyped here
        pyarrow = sys.modules.get("pyarrow")
        if pyarrow is not None and isinstance(batch, pyarrow.Table):
            return await self.arrow_batch(batch)  # type: ignore[no-any-return]
        raise TypeError(f"a batch must be a pyarrow.Table or a pandas.DataFrame, got {type(batch).__name__}")

    async def arrow_batch(self, table: Any) -> Any:
        """``table`` (a ``pyarrow.Table``) with the answer's columns appended."""
        pa = importlib.import_module("pyarrow")
        self._check_columns(table.column_names)
        rows = await self.chat_rows(table.column(self.messages_column).to_pylist())
        for index, (name, arrow_type, _) in enumerate(_COLUMNS):
            values = [row[index] for row in rows]
            table = table.append_column(pa.field(name, arrow_type), pa.array(values, type=arrow_type))
        return table

    async def pandas_batch(self, frame: Any) -> Any:
        """``frame`` with the answer's columns added (a new frame; ``frame`` is left as it was)."""
        pd = importlib.import_module("pandas")
        self._check_columns(list(frame.columns))
        rows = await self.chat_rows(list(frame[self.messages_column]))
        out = frame.copy(deep=False)
        for index, (name, arrow_type, _) in enumerate(_COLUMNS):
            out[name] = pd.Series(
                [row[index] for row in rows], index=frame.index, dtype=_PANDAS_DTYPES[arrow_type]
            )
        return out

    async def chat_rows(self, conversations: Sequence[Any]) -> list[_Row]:
        """One outcome per conversation, in order; the calls share this worker's client and its slots."""
        client, slots = self._open()
        return list(await asyncio.gather(*(self._row(client, slots, value) for value in conversations)))

    def map_in_pandas(self, frames: Iterator[Any]) -> Generator[Any, None, None]:
        """Spark's ``mapInPandas`` function: one event loop and one client for the task's frames, closed at the
        end (and when Spark stops reading early)."""
        with asyncio.Runner() as runner:
            try:
                for frame in frames:
                    yield runner.run(self.pandas_batch(frame))
            finally:
                runner.run(self.aclose())

    async def aclose(self) -> None:
        """Close this worker's client, its connection pool and the credential the factory built; the next
        batch builds them again. Safe to call twice."""
        client, built = self._client, self._built
        self._reset()
        if client is not None:
            await client.aclose()
        close = getattr(built, "close", None)
        if callable(close):
            closed = close()
            if inspect.isawaitable(closed):
                await closed

    def close_from_another_thread(self, timeout: float = 5.0) -> None:
        """Close the client on the loop it was built on, from another thread, waiting at most ``timeout``
        seconds (on the loop's own thread, the close is scheduled without waiting). Nothing to do when no
        batch ran or the loop is gone: then the process's exit closes the sockets."""
        loop = self._loop
        if self._client is None or loop is None or loop.is_closed() or not loop.is_running():
            return
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                loop.create_task(self.aclose())
                return
        future = asyncio.run_coroutine_threadsafe(self.aclose(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout)

    # --- internals ------------------------------------------------------------------------------------

    def _check_columns(self, columns: Sequence[str]) -> None:
        if self.messages_column not in columns:
            raise ConfigurationError(
                f"the batch has no column {self.messages_column!r} (its columns: {', '.join(map(str, columns))}); "
                "pass messages_column= to name the column holding the conversations"
            )
        taken = [name for name in OUTPUT_COLUMNS if name in columns]
        if taken:
            raise ConfigurationError(
                f"the batch already has column(s) {', '.join(taken)}, which the answers would overwrite; "
                "rename or drop them first"
            )

    def _open(self) -> tuple[AsyncChatClient, asyncio.Semaphore]:
        """This worker's client and slots, built on first use in the running loop (no await: batches that
        start together cannot build two)."""
        if self._client is None or self._slots is None:
            credential = None if self.credential is None else self.credential()
            self._client = self._build(credential)
            self._built = credential
            self._slots = asyncio.Semaphore(self.per_worker_concurrency)
            self._loop = asyncio.get_running_loop()
        return self._client, self._slots

    def _build(self, credential: Any) -> AsyncChatClient:
        return AsyncChatClient(**self.client_options, credential=credential)

    def _validate(self) -> None:
        """Build the client once as a worker would (a placeholder for the credential) and close it, in a
        thread of its own, so it works whether or not the driver runs an event loop."""

        async def build_and_close() -> None:
            await self._build(None if self.credential is None else _placeholder_token).aclose()

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="azureml-chat-check") as pool:
            pool.submit(asyncio.run, build_and_close()).result()

    async def _row(self, client: AsyncChatClient, slots: asyncio.Semaphore, value: Any) -> _Row:
        started = time.perf_counter()
        try:
            messages = _conversation(value)
            async with slots:
                started = time.perf_counter()
                response = await client.chat(messages, **self.chat_options)
        except Exception as exc:  # every failure belongs to its row; BaseException (cancellation) propagates
            # An API error's str() leads with its status; the others' message has their attempts, str() not.
            message = (
                exc.message
                if isinstance(exc, AzureMLChatError) and not isinstance(exc, APIStatusError)
                else str(exc)
            )
            request_id = getattr(exc, "request_id", None)
            latency = time.perf_counter() - started
            return _Row(
                None, None, None, None, None, request_id, _attempts(exc), latency, type(exc).__name__, message
            )
        usage = response.usage
        return _Row(
            response.content,
            response.reasoning,
            response.finish_reason,
            None if usage is None else usage.prompt_tokens,
            None if usage is None else usage.completion_tokens,
            response.request_id,
            response.attempts,
            time.perf_counter() - started,
            None,
            None,
        )


def _attempts(error: Exception) -> int:
    """The requests a failed row sent: what the error counted, or none when it failed before sending (its
    messages or options were refused, the client was closed, or it is not one of ours)."""
    if isinstance(error, AzureMLChatError) and not isinstance(
        error, ConfigurationError | InvalidRequestError | ClientClosedError
    ):
        return error.attempts
    return 0


def _placeholder_token() -> str:  # pragma: no cover - stands in for a credential on the driver, never called
    return "placeholder-token"


def _check_factory(credential: object) -> Callable[[], Any] | None:
    if credential is None:
        return None
    # A class (DefaultAzureCredential itself) is a factory even though it has a get_token attribute.
    if not isinstance(credential, type) and hasattr(credential, "get_token"):
        raise ConfigurationError(
            f"credential must be a zero-argument factory that builds the credential in each worker, got a live "
            f"{type(credential).__name__} (its locks, sessions and tokens cannot cross processes): pass "
            "credential=functools.partial(DefaultAzureCredential) (or the class itself) instead"
        )
    if not callable(credential):
        raise ConfigurationError(
            f"credential must be a zero-argument factory, such as functools.partial(DefaultAzureCredential), "
            f"got {type(credential).__name__}"
        )
    try:
        inspect.signature(credential).bind()
    except TypeError:
        raise ConfigurationError(
            "credential must be callable with no arguments (a factory called once per worker, such as "
            "functools.partial(DefaultAzureCredential)); a token callable that takes the scope goes inside it: "
            "credential=functools.partial(make_token_callable)"
        ) from None
    except ValueError:  # a builtin without a signature: take it as it is
        pass
    return credential


def _check_chat_options(chat_options: Mapping[str, Any] | None) -> dict[str, Any]:
    if chat_options is None:
        return {}
    if not isinstance(chat_options, Mapping) or not all(isinstance(name, str) for name in chat_options):
        raise InvalidRequestError(
            f"chat_options must be a mapping of chat() keyword arguments, got {describe_type(chat_options)}"
        )
    if "messages" in chat_options:
        raise InvalidRequestError("chat_options cannot hold messages: each row's come from messages_column")
    check_names(chat_options)
    return dict(chat_options)


def _conversation(value: Any) -> Any:
    """A row's messages as ``chat`` takes them: a list (Arrow structs' ``None`` fields dropped), or the list a
    JSON string holds.

    Raises:
        InvalidRequestError: a string that is not JSON, or a value that is not a conversation.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"the row's messages are a string that is not JSON ({exc.msg} at {exc.pos}); a string must "
                "hold a JSON list of messages, e.g. json.dumps([{'role': 'user', 'content': 'Hi!'}])"
            ) from None
        if isinstance(value, str):
            return value
    elif hasattr(value, "tolist") and not isinstance(value, Mapping):
        value = value.tolist()  # a numpy array, as pandas holds a list column
    if not is_conversation(value):
        raise InvalidRequestError(f"the row's messages must be {CONVERSATION}, got {describe_type(value)}")
    return [_without_nulls(message) for message in value]


def _without_nulls(value: Any) -> Any:
    """``value`` with the ``None`` entries of its mappings removed, at every depth (Arrow gives every struct
    every field of its column's type, ``None`` where a row had none)."""
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return _without_nulls(value.tolist())
    return value


def spark_schema(input_schema: Any) -> Any:
    """The schema of :meth:`ChatRows.map_in_pandas`'s output for an input of ``input_schema`` (a pyspark
    ``StructType``, such as ``df.schema``): its fields, then :data:`OUTPUT_COLUMNS`. Needs pyspark."""
    types = importlib.import_module("pyspark.sql.types")
    added = [types.StructField(name, getattr(types, spark)()) for name, _, spark in _COLUMNS]
    return types.StructType([*input_schema.fields, *added])
