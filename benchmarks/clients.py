"""The clients under test, each behind the same small adapter so the worker drives them identically.

Every adapter does the same work per call: send ``model`` + the two :data:`payloads.MESSAGES` +
``max_tokens`` (the ``/score`` ones send the ``input_data`` schema), parse the answer into the client's own
response type, and return the answer's text, which the worker compares with the expected text on every
call. A stream adapter reads every chunk into the client's chunk type, collects the text pieces, notes when
the first chunk arrived, and returns the joined text. Each library is imported only inside its adapter's
``open``, so a worker process loads nothing but its own client.

Library defaults are kept (that is what users get); where a default had to change, the adapter says why.

Raw aiohttp is the physical limit, in two codecs so that ours is always compared like with like: ``aiohttp``
(stdlib ``json``: the reference of the core install and of the peers) and ``aiohttp_orjson`` (the reference
of ``azureml_chat`` with the ``fast`` extra, which encodes and decodes with orjson); likewise
``aiohttp_score`` and ``aiohttp_orjson_score`` on ``/score``. :func:`reference` picks the one to compare with.
"""

from __future__ import annotations

import json
import time
from typing import Any

import payloads

# (chunks read, perf_counter() at the first chunk, the joined text)
StreamResult = tuple[int, float, str]


class AsyncAdapter:
    """A client driven from asyncio. ``chat`` returns the answer text."""

    name = "?"
    streams = True
    dialect = "chat"  # or "score"
    describe = ""

    async def open(self, base_url: str) -> None:
        raise NotImplementedError

    async def chat(self) -> str:
        raise NotImplementedError

    async def stream(self) -> StreamResult:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SyncAdapter:
    """A blocking client, driven from threads."""

    name = "?"
    streams = True
    dialect = "chat"
    describe = ""

    def open(self, base_url: str) -> None:
        raise NotImplementedError

    def chat(self) -> str:
        raise NotImplementedError

    def stream(self) -> StreamResult:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


_HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key"}


class RawAiohttp(AsyncAdapter):
    name = "aiohttp"
    codec = "stdlib"
    describe = (
        "**reference, stdlib json** (for the core install and the peers): one `aiohttp.ClientSession`, "
        "`json.dumps(...).encode()`, `json.loads(await r.read())`, SSE read with `async for line in resp.content`"
    )

    async def open(self, base_url: str) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._url = base_url + "/v1/chat/completions"

    async def chat(self) -> str:
        body = {"model": payloads.MODEL, "messages": payloads.MESSAGES, "max_tokens": payloads.ANSWER_TOKENS}
        async with self._session.post(self._url, data=json.dumps(body).encode(), headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            answer = json.loads(await resp.read())
        return str(answer["choices"][0]["message"]["content"])

    async def stream(self) -> StreamResult:
        body = {
            "model": payloads.MODEL,
            "messages": payloads.MESSAGES,
            "max_tokens": payloads.STREAM_TOKENS,
            "stream": True,
        }
        pieces: list[str] = []
        count = 0
        first = 0.0
        async with self._session.post(self._url, data=json.dumps(body).encode(), headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].rstrip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if not count:
                    first = time.perf_counter()
                count += 1
                choices = chunk["choices"]
                if choices:
                    content = choices[0]["delta"].get("content")
                    if content:
                        pieces.append(content)
        return count, first, "".join(pieces)

    async def close(self) -> None:
        await self._session.close()


class RawAiohttpScore(RawAiohttp):
    name = "aiohttp_score"
    streams = False
    dialect = "score"
    describe = (
        "the stdlib-json reference against `/score`: the same session and stdlib json, `input_data` body, "
        "reads `output`"
    )

    async def open(self, base_url: str) -> None:
        await super().open(base_url)
        self._url = base_url + "/score"

    async def chat(self) -> str:
        body = payloads.score_request(payloads.ANSWER_TOKENS)
        async with self._session.post(self._url, data=json.dumps(body).encode(), headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            answer = json.loads(await resp.read())
        return str(answer["output"])


class RawAiohttpOrjson(RawAiohttp):
    # The same calls as RawAiohttp with orjson written out in place (no helper in between), so that the codec is
    # the only difference between the two references.
    name = "aiohttp_orjson"
    codec = "orjson"
    describe = (
        "**reference, orjson** (for `azureml_chat` with the `fast` extra): the same session, "
        "`orjson.dumps(...)`, `orjson.loads(await r.read())`, SSE lines as above with `orjson.loads`"
    )

    async def open(self, base_url: str) -> None:
        import orjson

        self._orjson = orjson
        await super().open(base_url)

    async def chat(self) -> str:
        orjson = self._orjson
        body = {"model": payloads.MODEL, "messages": payloads.MESSAGES, "max_tokens": payloads.ANSWER_TOKENS}
        async with self._session.post(self._url, data=orjson.dumps(body), headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            answer = orjson.loads(await resp.read())
        return str(answer["choices"][0]["message"]["content"])

    async def stream(self) -> StreamResult:
        loads = self._orjson.loads
        body = {
            "model": payloads.MODEL,
            "messages": payloads.MESSAGES,
            "max_tokens": payloads.STREAM_TOKENS,
            "stream": True,
        }
        pieces: list[str] = []
        count = 0
        first = 0.0
        async with self._session.post(self._url, data=self._orjson.dumps(body), headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].rstrip()
                if data == b"[DONE]":
                    break
                chunk = loads(data)
                if not count:
                    first = time.perf_counter()
                count += 1
                choices = chunk["choices"]
                if choices:
                    content = choices[0]["delta"].get("content")
                    if content:
                        pieces.append(content)
        return count, first, "".join(pieces)


class RawAiohttpOrjsonScore(RawAiohttpOrjson):
    name = "aiohttp_orjson_score"
    streams = False
    dialect = "score"
    describe = "the orjson reference against `/score`: `input_data` body, reads `output`"

    async def open(self, base_url: str) -> None:
        await super().open(base_url)
        self._url = base_url + "/score"

    async def chat(self) -> str:
        orjson = self._orjson
        body = payloads.score_request(payloads.ANSWER_TOKENS)
        async with self._session.post(self._url, data=orjson.dumps(body), headers=_HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            answer = orjson.loads(await resp.read())
        return str(answer["output"])


class OurAsync(AsyncAdapter):
    name = "azureml_chat"
    describe = (
        "**ours**: `AsyncChatClient(url, api_key)` on `/v1/chat/completions`, `await client.chat(messages, "
        "max_tokens=..., model=...)`, messages passed as OpenAI-shaped dicts, `.content`; streaming with "
        "`async with client.stream(...)`"
    )

    async def open(self, base_url: str) -> None:
        from azureml_chat import AsyncChatClient

        self._client = AsyncChatClient(base_url + "/v1/chat/completions", api_key="bench-key")

    async def chat(self) -> str:
        response = await self._client.chat(
            payloads.MESSAGES, max_tokens=payloads.ANSWER_TOKENS, model=payloads.MODEL
        )
        return str(response.content)

    async def stream(self) -> StreamResult:
        pieces: list[str] = []
        count = 0
        first = 0.0
        async with self._client.stream(
            payloads.MESSAGES, max_tokens=payloads.STREAM_TOKENS, model=payloads.MODEL
        ) as stream:
            async for chunk in stream:
                if not count:
                    first = time.perf_counter()
                count += 1
                if chunk.content:
                    pieces.append(chunk.content)
        return count, first, "".join(pieces)

    async def close(self) -> None:
        await self._client.aclose()


class OurAsyncScore(OurAsync):
    name = "azureml_chat_score"
    streams = False
    dialect = "score"
    describe = "ours against `/score` (default `llama` formatter: `input_data` body, `output` answer)"

    async def open(self, base_url: str) -> None:
        from azureml_chat import AsyncChatClient

        self._client = AsyncChatClient(base_url + "/score", api_key="bench-key")

    async def chat(self) -> str:
        response = await self._client.chat(payloads.MESSAGES, max_tokens=payloads.ANSWER_TOKENS)
        return str(response.content)


class OurSync(SyncAdapter):
    name = "azureml_chat_sync"
    describe = (
        "ours, sync: one `Client` shared by N caller threads (c=1: one thread); each call is handed to the "
        "client's own event-loop thread. Streaming: `with client.stream(...)` from one thread"
    )

    def open(self, base_url: str) -> None:
        from azureml_chat import Client

        self._client = Client(base_url + "/v1/chat/completions", api_key="bench-key")

    def chat(self) -> str:
        response = self._client.chat(
            payloads.MESSAGES, max_tokens=payloads.ANSWER_TOKENS, model=payloads.MODEL
        )
        return str(response.content)

    def stream(self) -> StreamResult:
        pieces: list[str] = []
        count = 0
        first = 0.0
        with self._client.stream(
            payloads.MESSAGES, max_tokens=payloads.STREAM_TOKENS, model=payloads.MODEL
        ) as stream:
            for chunk in stream:
                if not count:
                    first = time.perf_counter()
                count += 1
                if chunk.content:
                    pieces.append(chunk.content)
        return count, first, "".join(pieces)

    def close(self) -> None:
        self._client.close()


class OpenAIAsync(AsyncAdapter):
    name = "openai"
    describe = "`openai.AsyncOpenAI(base_url=.../v1)`, defaults (`max_retries=2`), `chat.completions.create`"

    async def open(self, base_url: str) -> None:
        import openai

        self._client: Any = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="bench-key")

    async def chat(self) -> str:
        completion = await self._client.chat.completions.create(
            model=payloads.MODEL,
            messages=payloads.MESSAGES,
            max_tokens=payloads.ANSWER_TOKENS,
        )
        return str(completion.choices[0].message.content)

    async def stream(self) -> StreamResult:
        stream = await self._client.chat.completions.create(
            model=payloads.MODEL,
            messages=payloads.MESSAGES,
            max_tokens=payloads.STREAM_TOKENS,
            stream=True,
        )
        async with stream:
            return await _drain_openai_style(stream)

    async def close(self) -> None:
        await self._client.close()


class AzureInference(AsyncAdapter):
    name = "azure_inference"
    describe = (
        "`azure.ai.inference.aio.ChatCompletionsClient(endpoint=.../models, AzureKeyCredential)`, defaults "
        "(azure-core's aiohttp transport, `trust_env=True`), `complete(messages=[SystemMessage, UserMessage], ...)`"
    )

    async def open(self, base_url: str) -> None:
        from azure.ai.inference.aio import ChatCompletionsClient
        from azure.ai.inference.models import SystemMessage, UserMessage
        from azure.core.credentials import AzureKeyCredential

        self._client: Any = ChatCompletionsClient(
            endpoint=base_url + "/models", credential=AzureKeyCredential("bench-key")
        )
        self._messages = [SystemMessage(payloads.SYSTEM_PROMPT), UserMessage(payloads.USER_PROMPT)]

    async def chat(self) -> str:
        completion = await self._client.complete(
            messages=self._messages, max_tokens=payloads.ANSWER_TOKENS, model=payloads.MODEL
        )
        return str(completion.choices[0].message.content)

    async def stream(self) -> StreamResult:
        response = await self._client.complete(
            messages=self._messages, max_tokens=payloads.STREAM_TOKENS, model=payloads.MODEL, stream=True
        )
        async with response:
            return await _drain_openai_style(response)

    async def close(self) -> None:
        await self._client.close()


class LangChainServerless(AsyncAdapter):
    name = "langchain"
    describe = (
        "LangChain `AzureMLChatOnlineEndpoint` (langchain-community; serverless type, "
        "`CustomOpenAIChatContentFormatter`) against `.../models/chat/completions`, `await llm.ainvoke(messages)`; "
        "streaming with `astream`"
    )

    async def open(self, base_url: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # langchain-community 0.4 warns on import that it is being sunset
            from langchain_community.chat_models.azureml_endpoint import (
                AzureMLChatOnlineEndpoint,
                CustomOpenAIChatContentFormatter,
            )
        from langchain_core.messages import HumanMessage, SystemMessage

        self._llm = self._build(AzureMLChatOnlineEndpoint, CustomOpenAIChatContentFormatter, base_url)
        self._messages = [SystemMessage(payloads.SYSTEM_PROMPT), HumanMessage(payloads.USER_PROMPT)]
        # astream ignores model_kwargs and sends "model": null unless told: both go per call.
        self._stream_kwargs = {"model": payloads.MODEL, "max_tokens": payloads.STREAM_TOKENS}

    def _build(self, endpoint_cls: Any, formatter_cls: Any, base_url: str) -> Any:
        # On Python 3.11 the api type must be the string: the validator str()-ifies the enum and rejects it.
        return endpoint_cls(
            endpoint_url=base_url + "/models/chat/completions",
            endpoint_api_type="serverless",
            endpoint_api_key="bench-key",
            content_formatter=formatter_cls(),
            model_kwargs={"model": payloads.MODEL, "max_tokens": payloads.ANSWER_TOKENS},
        )

    async def chat(self) -> str:
        message = await self._llm.ainvoke(self._messages)
        return str(message.content)

    async def stream(self) -> StreamResult:
        pieces: list[str] = []
        count = 0
        first = 0.0
        # astream builds a new openai.AsyncOpenAI per call and strips /chat/completions from endpoint_url for
        # good (so the worker streams last), and yields one extra, empty final chunk.
        async for chunk in self._llm.astream(self._messages, **self._stream_kwargs):
            if not count:
                first = time.perf_counter()
            count += 1
            if chunk.content:
                pieces.append(chunk.content)
        return count, first, "".join(pieces)

    async def close(self) -> None:
        pass  # urllib: nothing pooled


class LangChainDedicated(LangChainServerless):
    name = "langchain_score"
    streams = False
    dialect = "score"
    describe = "the same LangChain class, dedicated type against `/score` (`input_data` body; no streaming)"

    def _build(self, endpoint_cls: Any, formatter_cls: Any, base_url: str) -> Any:
        return endpoint_cls(
            endpoint_url=base_url + "/score",
            endpoint_api_type="dedicated",
            endpoint_api_key="bench-key",
            content_formatter=formatter_cls(),
            model_kwargs={"max_new_tokens": payloads.ANSWER_TOKENS},
        )


ADAPTERS: dict[str, type[AsyncAdapter] | type[SyncAdapter]] = {
    cls.name: cls
    for cls in (
        RawAiohttp,
        RawAiohttpOrjson,
        OurAsync,
        OurSync,
        OpenAIAsync,
        AzureInference,
        LangChainServerless,
        RawAiohttpScore,
        RawAiohttpOrjsonScore,
        OurAsyncScore,
        LangChainDedicated,
    )
}
REFERENCE = "aiohttp"  # the stdlib-json limit: the peers' reference, and the core install's
# Raw aiohttp with each codec, per route: what a client using that codec is compared with.
REFERENCES = {
    ("chat", "stdlib"): "aiohttp",
    ("chat", "orjson"): "aiohttp_orjson",
    ("score", "stdlib"): "aiohttp_score",
    ("score", "orjson"): "aiohttp_orjson_score",
}
OURS = frozenset({"azureml_chat", "azureml_chat_sync", "azureml_chat_score"})


def reference(client: str, codec: str = "stdlib") -> str:
    """The raw-aiohttp adapter ``client`` is compared with: the same route, and for our own clients the same
    JSON codec (``codec``: what the measured azureml_chat uses, ``"orjson"`` or ``"stdlib"``). The peers are
    compared with the stdlib reference."""
    adapter = ADAPTERS[client]
    return REFERENCES[(adapter.dialect, codec if client in OURS else "stdlib")]


def create(name: str) -> AsyncAdapter | SyncAdapter:
    """The adapter called ``name`` (see :data:`ADAPTERS`)."""
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise SystemExit(f"unknown client {name!r}; known: {', '.join(ADAPTERS)}") from None


async def _drain_openai_style(stream: Any) -> StreamResult:
    """Count the chunks of an OpenAI-shaped stream (``choices[0].delta.content``), time the first, join the text."""
    pieces: list[str] = []
    count = 0
    first = 0.0
    async for chunk in stream:
        if not count:
            first = time.perf_counter()
        count += 1
        if chunk.choices:
            content = chunk.choices[0].delta.content
            if content:
                pieces.append(content)
    return count, first, "".join(pieces)
