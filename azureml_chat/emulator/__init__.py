"""An Azure ML online endpoint on loopback, for demos and tests: ``azureml_chat.emulator``.

A real ``aiohttp.web`` server that speaks the dialects of Azure ML online endpoints:

- ``POST /score`` in the deployment's family (``llama`` chat schema by default; ``mistral``; ``openai``
  for vLLM-style deployments; ``gpt2``, ``hf``, ``dolly`` text generation);
- ``POST /v1/chat/completions``, ``/chat/completions``, ``/models/chat/completions`` (OpenAI-compatible,
  SSE streaming with a usage chunk and ``[DONE]``, tool calls, ``response_format``, ``n`` choices);
- ``POST /v1/completions``, ``/completions``, ``/models/completions`` (OpenAI-compatible text completions:
  ``{"prompt": ...}`` -> ``choices[].text``, SSE streaming with ``text`` deltas, a usage chunk and ``[DONE]``),
  for every family;
- ``GET /info`` (and ``/models/info``).

The Azure AI Model Inference routes (those without ``/v1/``) keep Azure's rules: ``?api-version=`` is required,
and a body field outside Azure's schema is a 400 unless ``extra-parameters: pass-through`` (or ``drop``) is
sent; the provider-native ``/v1/`` routes take vLLM-style extras (see :mod:`._azure`). Every answer of the chat,
text and ``/score`` routes carries Azure's ``x-ratelimit-*`` headers, counted against a :class:`Quota` (by
default one no load spends). Usage objects carry ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``; a deployment can answer as a reasoning model
(``Deployment(reasoning="think" | "field")``).

It checks the key like Azure's front end (``Authorization: Bearer <key>`` or ``api-key: <key>``), routes the
``azureml-model-deployment`` header among named deployments, answers deterministically (``"You said: <text>"``
or scripted replies; ``max_tokens`` / ``max_new_tokens`` count whitespace-separated words), injects faults
(see :class:`Fault` for the spec grammar) and records every request. Text completions and ``/score`` text
generation answer ``"You said: <prompt>"``.

Example::

    from azureml_chat.emulator import Deployment, Emulator, Quota

    async with Emulator(key="test-key", deployments=[Deployment("blue")]) as emu:
        emu.add_fault("status=503,times=2")      # the next two requests get a 503
        ...                                      # call emu.score_url / emu.chat_url / emu.completions_url
        assert [r.status for r in emu.requests] == [503, 503, 200]

    async with Emulator(quota=Quota(requests=2, window=60)) as emu:
        ...                                      # a third request within the minute gets a 429
        assert emu.quota_usage.refused == 1

Per request, a fault can also be asked for with the ``x-emulator-fault: <spec>`` header or a
``[[fault:<spec>]]`` control word in the last user message or prompt (removed before the echo).

This package is a leaf: nothing in the core imports it.
"""

from ._app import CHAT_PATHS, COMPLETIONS_PATHS, DEPLOYMENT_HEADER, FAULT_HEADER, INFO_PATHS
from ._deployments import FAMILIES, Deployment
from ._errors import EmulatorError, FaultSpecError, PortInUseError
from ._faults import Fault, parse_faults
from ._quota import Quota, QuotaUsage
from ._records import RecordedRequest
from ._runner import serve
from ._server import Emulator
from ._thread import EmulatorThread

__all__ = [
    "CHAT_PATHS",
    "COMPLETIONS_PATHS",
    "DEPLOYMENT_HEADER",
    "FAMILIES",
    "FAULT_HEADER",
    "INFO_PATHS",
    "Deployment",
    "Emulator",
    "EmulatorError",
    "EmulatorThread",
    "Fault",
    "FaultSpecError",
    "PortInUseError",
    "Quota",
    "QuotaUsage",
    "RecordedRequest",
    "parse_faults",
    "serve",
]
