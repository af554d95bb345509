"""``--endpoints FILE``: several endpoints for ``chat`` and ``batch``, read from a JSON file.

The file is a list with one object per endpoint, in ``Endpoint``'s words::

    [
      {"url": "https://llama-eastus.eastus2.inference.ml.azure.com/score", "key_env": "EASTUS_KEY"},
      {"url": "https://llama-westus.westus3.inference.ml.azure.com/score", "key_env": "WESTUS_KEY",
       "name": "westus", "weight": 2},
      {"url": "https://llama-fallback.swedencentral.models.ai.azure.com/v1/chat/completions",
       "key_env": "FALLBACK_KEY", "priority": 1}
    ]

``key_env`` names the variable holding the key (so the file can be committed); ``key`` gives it inline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._endpoint import Endpoint
from .._errors import ConfigurationError

__all__ = ["ENDPOINT_FIELDS", "EndpointsFileError", "read_endpoints"]

# The keys an entry may have, and the Endpoint argument each becomes ("key" and "key_env" both become api_key).
ENDPOINT_FIELDS = {
    "url": "url",
    "key": "api_key",
    "key_env": "api_key",
    "name": "name",
    "weight": "weight",
    "priority": "priority",
    "deployment": "deployment",
    "formatter": "formatter",
    "endpoint_type": "endpoint_type",
}


class EndpointsFileError(ValueError):
    """What is wrong with an endpoints file, in words that name the file and the entry."""


def read_endpoints(path: str, env: Mapping[str, str] = os.environ) -> list[Endpoint]:
    """The endpoints ``path`` lists.

    Raises:
        EndpointsFileError: the file cannot be read, is not a non-empty JSON list of objects, or an entry is
            wrong (an unknown key, no ``url``, no key, a key variable that is not set, a bad value).
    """
    where = f"--endpoints {path}"
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EndpointsFileError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise EndpointsFileError(f"{where}: not JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise EndpointsFileError(f'{where}: must be a non-empty JSON list of {{"url": ..., "key_env": ...}}')
    return [_endpoint(entry, f"{where}, entry {index}", env) for index, entry in enumerate(entries)]


def _endpoint(entry: Any, where: str, env: Mapping[str, str]) -> Endpoint:
    if not isinstance(entry, dict):
        raise EndpointsFileError(f'{where}: must be an object like {{"url": ..., "key_env": ...}}')
    unknown = sorted(set(entry) - set(ENDPOINT_FIELDS))
    if unknown:
        raise EndpointsFileError(
            f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(ENDPOINT_FIELDS)}"
        )
    if "url" not in entry:
        raise EndpointsFileError(f"{where}: has no url")
    if ("key" in entry) == ("key_env" in entry):
        raise EndpointsFileError(f"{where}: give key_env (the variable holding the key) or key, one of them")
    arguments: dict[str, Any] = {ENDPOINT_FIELDS[name]: value for name, value in entry.items()}
    if "key_env" in entry:
        variable = entry["key_env"]
        key = env.get(variable) if isinstance(variable, str) else None
        if not key:
            raise EndpointsFileError(f"{where}: key_env names {variable!r}, which is not set")
        arguments["api_key"] = key
    try:
        return Endpoint(**arguments)
    except (ConfigurationError, TypeError) as exc:
        raise EndpointsFileError(f"{where}: {exc}") from None
