"""The options ``chat`` and ``batch`` share, declared once, and the client and ``chat()`` arguments they make.

Each group is added where its subcommand's help lists it, so ``--help`` keeps its order. A client setting
has three names: its flag, its ``AZUREML_*`` variable and the Python keyword the library's messages use.
``OPTIONS`` holds them side by side, and :func:`make_client` says every configuration problem with the
first two, since a command-line user has no keywords to pass.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .. import _defaults
from .._client import AsyncChatClient
from .._config import ENV_TIMEOUT
from .._endpoint import ENV_DEPLOYMENT, ENV_KEY, ENV_TYPE, ENV_URL, resolve_url
from .._errors import ConfigurationError
from ..formatters import Route
from ._endpoints import EndpointsFileError, read_endpoints
from ._types import chat_families, chat_family, finite, seconds, whole

__all__ = [
    "OPTIONS",
    "UsageError",
    "add_endpoint_options",
    "add_max_retries_option",
    "add_sampling_options",
    "add_timeout_option",
    "cli_message",
    "make_client",
    "sampling_params",
]


class UsageError(Exception):
    """A flag, ``AZUREML_*`` variable or path the user must fix; one line naming it, exit code 2."""


@attrs.frozen
class Option:
    """One client setting as a command-line user sets it.

    Attributes:
        flag: the command-line flag (``--url``).
        keyword: the ``AsyncChatClient`` keyword it becomes (``endpoint_url``), as library messages name it.
        env: the variable read when the flag is not given, if any.
    """

    flag: str
    keyword: str
    env: str | None = None

    @property
    def dest(self) -> str:
        """The flag's attribute on the parsed arguments."""
        return self.flag.removeprefix("--").replace("-", "_")

    def source(self, args: argparse.Namespace, env: Mapping[str, str]) -> str:
        """Where this setting's value came from: the flag, else its variable (both when neither is set)."""
        if getattr(args, self.dest, None) not in (None, ""):
            return self.flag
        if self.env is None:
            return self.flag
        return self.env if env.get(self.env) else f"{self.flag} or {self.env}"


OPTIONS = (
    Option("--url", "endpoint_url", ENV_URL),
    Option("--key", "api_key", ENV_KEY),
    Option("--deployment", "deployment", ENV_DEPLOYMENT),
    Option("--endpoint-type", "endpoint_type", ENV_TYPE),
    Option("--formatter", "formatter"),
    Option("--timeout", "timeout", ENV_TIMEOUT),
    Option("--max-retries", "max_retries"),
)
_URL, _KEY = OPTIONS[0], OPTIONS[1]
_BY_KEYWORD = {option.keyword: option for option in OPTIONS}
# A parenthesis that names a keyword, e.g. "(or pass credential= for Entra ID)".
_KEYWORD_ASIDE = re.compile(r"\s*\([^()]*\b[a-z_]+=[^()]*\)")
# A keyword offered as an alternative, e.g. the second one in "pass api_key= or credential=".
_KEYWORD_ALTERNATIVE = re.compile(r"(?:,\s*|\s+or\s+)\b([a-z_]+)=(?:'[^']*'|\w+)?")


def _default(option: Option) -> str:
    return f"(default: ${option.env})" if option.env else ""


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """Where to send and how to speak: ``--url``, ``--key``, ``--deployment``, ``--endpoint-type``,
    ``--formatter``."""
    url, key, deployment, endpoint_type, formatter = OPTIONS[:5]
    parser.add_argument(
        url.flag,
        help="endpoint URL, ending in /score or /v1/chat/completions " + _default(url),
    )
    parser.add_argument(key.flag, help="endpoint key " + _default(key))
    parser.add_argument(deployment.flag, help="deployment name " + _default(deployment))
    parser.add_argument(
        endpoint_type.flag,
        choices=("dedicated", "realtime", "serverless"),
        help=f"the kind of endpoint (default: ${endpoint_type.env}, else inferred from the URL)",
    )
    parser.add_argument(
        formatter.flag,
        type=chat_family,
        metavar="FAMILY",
        help=f"model family: {', '.join(chat_families())} (default: llama on /score, else openai)",
    )
    parser.add_argument(
        "--endpoints",
        metavar="FILE",
        help="several endpoints instead of --url: a JSON list of "
        '{"url": ..., "key_env": VAR or "key": ..., "name", "weight", "priority", "deployment", "formatter"}; '
        "calls go to the lowest priority with a healthy endpoint and fail over to the others",
    )


def add_timeout_option(parser: argparse.ArgumentParser) -> None:
    """``--timeout``: seconds per attempt."""
    timeout = _BY_KEYWORD["timeout"]
    parser.add_argument(timeout.flag, type=seconds, help="seconds per attempt " + _default(timeout))


def add_max_retries_option(parser: argparse.ArgumentParser) -> None:
    """``--max-retries``: retries after the first attempt."""
    parser.add_argument(
        _BY_KEYWORD["max_retries"].flag,
        type=whole(0),
        help=f"retries after the first attempt (default: {_defaults.MAX_RETRIES})",
    )


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """The default ``chat()`` arguments: ``--max-tokens`` (or ``--max-completion-tokens``), ``--temperature``."""
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--max-tokens", type=whole(1), help="the longest answer, in tokens")
    limit.add_argument(
        "--max-completion-tokens",
        type=whole(1),
        help="the longest answer, in tokens, for o-series (reasoning) deployments, which take it instead of "
        "--max-tokens",
    )
    parser.add_argument("--temperature", type=finite, help="sampling temperature, e.g. 0 or 0.7")


def cli_message(message: str, args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> str:
    """A library configuration message in a command-line user's terms.

    Keywords become flags or variables (``formatter='openai'`` -> ``--formatter openai``; ``endpoint_url
    must ...`` -> ``--url must ...``, or ``AZUREML_ENDPOINT_URL must ...`` when the value came from there),
    and an aside or an alternative naming a keyword the command line does not have (``credential=``) is
    dropped.
    """
    message = _KEYWORD_ASIDE.sub(_aside, message)
    message = _KEYWORD_ALTERNATIVE.sub(_alternative, message)
    for option in OPTIONS:
        keyword = re.escape(option.keyword)
        message = re.sub(rf"\b{keyword}=(?:'([^']*)')?", _Flag(option.flag), message)
        # A one-word keyword is also an English word ("deployment"): it names the setting only when it
        # starts the message, as in "deployment must be ...".
        name = rf"\b{keyword}\b" if "_" in option.keyword else rf"^{keyword}\b"
        message = re.sub(name, option.source(args, env), message)
    return message


def _aside(aside: re.Match[str]) -> str:
    """A parenthesis kept when every keyword in it has a flag, else dropped."""
    keywords = re.findall(r"\b([a-z_]+)=", aside[0])
    return aside[0] if all(keyword in _BY_KEYWORD for keyword in keywords) else ""


def _alternative(alternative: re.Match[str]) -> str:
    """An alternative kept when its keyword has a flag, else dropped."""
    return alternative[0] if alternative[1] in _BY_KEYWORD else ""


@attrs.frozen
class _Flag:
    """The replacement of ``keyword=`` or ``keyword='value'``: ``--flag`` or ``--flag value``."""

    flag: str

    def __call__(self, given: re.Match[str]) -> str:
        return f"{self.flag} {given[1]}" if given[1] else self.flag


def _check_endpoint(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """The mistakes a new user makes first, said before the client is built."""
    url = args.url or env.get(ENV_URL, "")
    if not url.strip():
        raise UsageError(
            f"no endpoint URL: pass {_URL.flag} or set {ENV_URL} "
            "(e.g. https://<endpoint>.<region>.inference.ml.azure.com/score)"
        )
    _, route, _, _ = resolve_url(url, args.endpoint_type or env.get(ENV_TYPE))
    if route is Route.COMPLETIONS:
        raise UsageError(
            f"{_URL.source(args, env)} is a text completion URL ({url!r}) and azureml-chat sends "
            "conversations: use the endpoint's chat completions URL (.../v1/chat/completions)"
        )
    key = args.key if args.key is not None else env.get(ENV_KEY, "")
    if not key.strip():
        raise UsageError(f"no key: pass {_KEY.flag} or set {ENV_KEY}")


def make_client(args: argparse.Namespace, **options: Any) -> AsyncChatClient:
    """The client the endpoint and timeout options describe (``options``: more constructor arguments).

    Raises:
        UsageError: a missing or bad setting, named by its flag or variable.
    """
    env = os.environ
    if getattr(args, "endpoints", None):
        return _pool_client(args, env, options)
    try:
        _check_endpoint(args, env)
        return AsyncChatClient(
            args.url,
            args.key,
            deployment=args.deployment,
            endpoint_type=args.endpoint_type,
            formatter=args.formatter,
            timeout=args.timeout,
            **options,
        )
    except ConfigurationError as exc:
        raise UsageError(cli_message(str(exc), args, env)) from None


def _pool_client(
    args: argparse.Namespace, env: Mapping[str, str], options: dict[str, Any]
) -> AsyncChatClient:
    """The client over the endpoints ``--endpoints FILE`` lists (the single-endpoint flags go in the file)."""
    clashes = [option.flag for option in OPTIONS[:5] if getattr(args, option.dest, None) is not None]
    if clashes:
        raise UsageError(
            f"pass --endpoints or {', '.join(clashes)}, not both: with several endpoints, each entry of the "
            "file gives its own url, key, deployment and formatter"
        )
    try:
        return AsyncChatClient(endpoints=read_endpoints(args.endpoints, env), timeout=args.timeout, **options)
    except EndpointsFileError as exc:
        raise UsageError(str(exc)) from None
    except ConfigurationError as exc:
        raise UsageError(f"--endpoints {args.endpoints}: {exc}") from None


def sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``chat()`` arguments the sampling options set (those left out are not sent)."""
    return {
        name: value
        for name, value in (
            ("max_tokens", args.max_tokens),
            ("max_completion_tokens", args.max_completion_tokens),
            ("temperature", args.temperature),
        )
        if value is not None
    }
