"""What a running emulator prints first: where it listens, the key, the deployments, the routes and the quota.

No I/O. Several instances' banner, which starts with one line per instance, is in :mod:`._instances`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._app import CHAT_PATHS, COMPLETIONS_PATHS
from ._deployments import Deployment
from ._quota import Quota

__all__ = ["describe"]


def describe(
    *, url: str, key: str | None, deployments: Iterable[Deployment], default: str, quota: Quota | None
) -> str:
    """The banner's lines: ``listening on URL`` first, ``Press Ctrl-C to stop.`` last."""
    key_line = (
        f"key: {key}  (send 'Authorization: Bearer <key>' or 'api-key: <key>')"
        if key
        else "key: none (any key is accepted)"
    )
    deployed = ", ".join(
        f"{d.name} ({d.family}, {d.model}{f', reasoning={d.reasoning}' if d.reasoning else ''})"
        f"{' [default]' if d.name == default else ''}"
        for d in deployments
    )
    quota_line = (
        f"quota: {quota} (past it: 429)"
        if quota is not None
        else "quota: none (x-ratelimit-* headers count against a limit no load reaches)"
    )
    return "\n".join(
        [
            f"azureml-chat emulator listening on {url}",
            f"  {key_line}",
            f"  deployments: {deployed}",
            f"  routes: POST /score, POST {', '.join(CHAT_PATHS + COMPLETIONS_PATHS)}, GET /info",
            "  model-inference routes (no /v1/) need ?api-version=YYYY-MM-DD[-preview] and refuse unknown "
            "fields unless 'extra-parameters: pass-through' or 'drop'",
            f"  {quota_line}",
            "Press Ctrl-C to stop.",
        ]
    )
