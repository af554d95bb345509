"""The options ``chat`` and ``batch`` share, declared once, and the client and ``chat()`` arguments they make.

Each group is added where its subcommand's help lists it, so ``--help`` keeps its order.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._client import AsyncChatClient

__all__ = [
    "add_endpoint_options",
    "add_sampling_options",
    "add_timeout_option",
    "make_client",
    "sampling_params",
]


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """Where to send and how to speak: ``--url``, ``--key``, ``--deployment``, ``--endpoint-type``,
    ``--formatter``."""
    parser.add_argument("--url", help="endpoint URL (default: $AZUREML_ENDPOINT_URL)")
    parser.add_argument("--key", help="endpoint key (default: $AZUREML_ENDPOINT_API_KEY)")
    parser.add_argument("--deployment", help="deployment name (default: $AZUREML_DEPLOYMENT_NAME)")
    parser.add_argument("--endpoint-type", choices=("dedicated", "realtime", "serverless"))
    parser.add_argument("--formatter", help="model family (see azureml_chat.available_formatters())")


def add_timeout_option(parser: argparse.ArgumentParser) -> None:
    """``--timeout``: seconds per attempt."""
    parser.add_argument("--timeout", type=float, help="seconds per attempt")


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """The default ``chat()`` arguments: ``--max-tokens``, ``--temperature``."""
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--temperature", type=float)


def make_client(args: argparse.Namespace, **options: Any) -> AsyncChatClient:
    """The client the endpoint and timeout options describe (``options``: more constructor arguments).

    Raises:
        AzureMLChatError: a bad URL or a missing key.
    """
    return AsyncChatClient(
        args.url,
        args.key,
        deployment=args.deployment,
        endpoint_type=args.endpoint_type,
        formatter=args.formatter,
        timeout=args.timeout,
        **options,
    )


def sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``chat()`` arguments the sampling options set (those left out are not sent)."""
    return {
        name: value
        for name, value in (("max_tokens", args.max_tokens), ("temperature", args.temperature))
        if value is not None
    }
