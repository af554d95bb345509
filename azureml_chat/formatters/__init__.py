"""The formatter registry: model family name -> :class:`ContentFormatter`.

Built in: the chat families ``openai`` (which also completes text on ``/v1/completions``), ``llama`` (alias
``custom-openai``) and ``mistral``, and the ``/score`` text-generation families ``gpt2``, ``hf`` and ``dolly``.
Register your own for a custom ``score.py``::

    class MyFormatter(ContentFormatter):
        name = "my-model"
        routes = frozenset({Route.SCORE})
        def build_request(self, route, messages, params, *, stream): ...
        def parse_response(self, route, body): ...

    register_formatter("my-model", MyFormatter())

A text-generation ``score.py`` lists its routes in ``completion_routes`` too and implements
``build_completion_request(route, prompt, params, *, stream)`` and ``parse_completion(route, body)`` instead.
"""

from __future__ import annotations

import copyreg
import threading
from collections.abc import Iterable
from typing import Any

from .._errors import ConfigurationError
from .._serialization import messages_to_wire
from ._base import ContentFormatter, Route
from ._openai import OpenAIFormatter
from ._score import LlamaFormatter, MistralFormatter
from ._textgen import DollyFormatter, GPT2Formatter, HFFormatter, TextGenerationFormatter

__all__ = [
    "ContentFormatter",
    "DollyFormatter",
    "GPT2Formatter",
    "HFFormatter",
    "LlamaFormatter",
    "MistralFormatter",
    "OpenAIFormatter",
    "Route",
    "TextGenerationFormatter",
    "available_formatters",
    "get_formatter",
    "messages_to_wire",
    "register_formatter",
]

_lock = threading.Lock()
_formatters: dict[str, ContentFormatter] = {}
_aliases: dict[str, str] = {}


def _key(family: str) -> str:
    if not isinstance(family, str) or not family.strip():
        raise ConfigurationError(f"a formatter family must be a non-empty string, got {family!r}")
    return family.strip().lower()


def register_formatter(
    family: str,
    formatter: ContentFormatter | type[ContentFormatter],
    *,
    aliases: Iterable[str] = (),
    replace: bool = False,
) -> None:
    """Make ``formatter`` available as ``family`` (and each alias), case-insensitively.

    Args:
        family: the name users pass as ``formatter=``.
        formatter: a :class:`ContentFormatter` instance (a subclass is instantiated with no arguments).
        aliases: other names for the same family.
        replace: allow replacing an existing family or alias (otherwise that is a ``ConfigurationError``).
    """
    if isinstance(formatter, type):
        formatter = formatter()
    if not isinstance(formatter, ContentFormatter):
        raise ConfigurationError(
            f"a formatter must be a ContentFormatter (subclass azureml_chat.ContentFormatter), got {formatter!r}"
        )
    names = [_key(family), *(_key(alias) for alias in aliases)]
    with _lock:
        taken = [name for name in names if name in _formatters or name in _aliases]
        if taken and not replace:
            raise ConfigurationError(
                f"formatter family {taken[0]!r} is already registered; pass replace=True to replace it"
            )
        for name in names:
            _formatters.pop(name, None)
            _aliases.pop(name, None)
        _formatters[names[0]] = formatter
        for alias in names[1:]:
            _aliases[alias] = names[0]


def get_formatter(family: str) -> ContentFormatter:
    """The formatter registered as ``family`` (or an alias of it).

    Raises:
        ConfigurationError: for an unknown family, listing the known ones.
    """
    key = _key(family)
    key = _aliases.get(key, key)
    try:
        return _formatters[key]
    except KeyError:
        known = ", ".join(available_formatters())
        raise ConfigurationError(f"unknown formatter {family!r}; known families: {known}") from None


def available_formatters() -> tuple[str, ...]:
    """The registered family names and aliases, sorted."""
    return tuple(sorted([*_formatters, *_aliases]))


def _as_family(formatter: ContentFormatter) -> str | tuple[Any, ...]:
    """How a built-in formatter pickles: as the family it is registered under, so a worker process gets its own
    registry's instance (and options that cross a process boundary come back equal). Any other instance of
    its class pickles as usual."""
    if _formatters.get(formatter.name) is formatter:
        return get_formatter, (formatter.name,)
    return object.__reduce_ex__(formatter, 2)


register_formatter("openai", OpenAIFormatter())
register_formatter("llama", LlamaFormatter(), aliases=("custom-openai",))
register_formatter("mistral", MistralFormatter())
register_formatter("gpt2", GPT2Formatter())
register_formatter("hf", HFFormatter())
register_formatter("dolly", DollyFormatter())
for _builtin in (
    OpenAIFormatter,
    LlamaFormatter,
    MistralFormatter,
    GPT2Formatter,
    HFFormatter,
    DollyFormatter,
):
    copyreg.pickle(_builtin, _as_family)
