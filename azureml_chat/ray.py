"""Chat over a Ray Dataset on Ray Data's actor pool: :func:`map_chat` (the ``ray`` extra).

Each actor runs :class:`~azureml_chat.rows.ChatRows`: one client per actor, built on the event loop Ray Data
gives an async UDF (a dedicated thread per actor, which runs up to four batches of each task at once), with one
semaphore of ``per_worker_concurrency`` calls across them. A row that fails is a row with its error, never a
failed task, so Ray never retries a batch for an application error.

What Ray does on its own, in 2.60 (``ray/data/_internal/execution/operators/actor_pool_map_operator.py``):

- An actor that dies (its process killed, its node lost) is restarted and its in-flight batches run again
  (``max_restarts=-1``, ``max_task_retries=-1``), so their calls are sent again; the output holds each row
  once (a failed attempt's partial output is discarded). Keep ``batch_size`` small to bound the repeats.
- A UDF has no teardown hook. When Ray ends an actor gracefully (``__ray_shutdown__``, after its tasks), it
  drops the UDF, whose ``__del__`` hands the client's close to the actor's loop and waits for it (a few
  seconds at most). An actor killed outright closes nothing: its process's exit closes the sockets.

This module imports ray only when :func:`map_chat` is called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from . import _defaults
from ._rows import PER_WORKER_CONCURRENCY, ChatRows, WorkerOptions

if TYPE_CHECKING:
    import ray.data

__all__ = ["BATCH_SIZE", "NUM_CPUS", "map_chat"]

BATCH_SIZE = _defaults.RAY_BATCH_SIZE
NUM_CPUS = _defaults.RAY_NUM_CPUS


class _ChatActor(ChatRows):
    """:class:`ChatRows` as Ray Data's callable class: built in the actor from the driver's checked copy."""

    def __init__(self, rows: ChatRows) -> None:
        self.__setstate__(rows.__getstate__())

    def __del__(self) -> None:
        # Ray's only signal that a UDF's actor ends gracefully; the close itself runs on the actor's loop.
        self.close_from_another_thread()


def map_chat(
    dataset: ray.data.Dataset,
    *,
    messages_column: str = "messages",
    concurrency: int | tuple[int, int] = 1,
    per_worker_concurrency: int = PER_WORKER_CONCURRENCY,
    batch_size: int = BATCH_SIZE,
    num_cpus: float = NUM_CPUS,
    credential: Callable[[], Any] | None = None,
    chat_options: Mapping[str, Any] | None = None,
    **client_options: Unpack[WorkerOptions],
) -> ray.data.Dataset:
    """Send each row's conversation and add the answer's columns (lazily, as Ray datasets are).

    Args:
        dataset: the rows; ``messages_column`` holds each row's messages (a list of dicts in the OpenAI shape,
            or a JSON string of one).
        messages_column: the column holding the conversations.
        concurrency: the number of actors, or ``(min, max)`` for an autoscaling pool.
        per_worker_concurrency: calls in flight per actor. The total is ``actors x per_worker_concurrency``;
            with ``rate_limit=RateLimit(..., store=...)`` the actors share one quota instead.
        batch_size: rows per batch. An actor that dies repeats the calls of the batches it was running.
        num_cpus: CPUs reserved per actor (fractional: the actors mostly wait on the network).
        credential: a zero-argument factory, called once in each actor, that builds the Entra ID credential,
            such as ``functools.partial(DefaultAzureCredential)``; never a live credential.
        chat_options: keyword arguments of ``chat()`` for every row (``temperature``, ``max_tokens``, ...).
        **client_options: the client's options (``endpoint_url``, ``api_key``, ``endpoints``, ``rate_limit``,
            ``retry``, ``timeout``, ``deployment``, ...; see :class:`~azureml_chat.rows.WorkerOptions`).

    Returns:
        The dataset with the input columns and :data:`~azureml_chat.rows.OUTPUT_COLUMNS`; within a batch the
        rows keep their order. A failed row has ``error_type`` and ``error`` set and no answer.

    Raises:
        ImportError: ray (with Ray Data) is not installed.
        ConfigurationError, InvalidRequestError: an option the client refuses, a live credential, a misspelt
            ``chat_options`` name (raised here, before anything runs).
    """
    try:
        from ray.data import ActorPoolStrategy
    except ImportError as exc:
        raise ImportError(
            f'azureml_chat.ray needs Ray Data: pip install "azureml-chat[ray]" ({exc})'
        ) from exc
    rows = ChatRows(
        messages_column=messages_column,
        per_worker_concurrency=per_worker_concurrency,
        credential=credential,
        chat_options=chat_options,
        **client_options,
    )
    if isinstance(concurrency, tuple):
        compute = ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        compute = ActorPoolStrategy(size=concurrency)
    extra: dict[str, Any] = {}
    if "udf_modifying_row_count" in inspect.signature(dataset.map_batches).parameters:  # Ray >= 2.5x
        extra["udf_modifying_row_count"] = False  # one output row per input row: Ray may push limits down
    return dataset.map_batches(
        _ChatActor,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=compute,
        num_cpus=num_cpus,
        fn_constructor_kwargs={"rows": rows},
        **extra,
    )
