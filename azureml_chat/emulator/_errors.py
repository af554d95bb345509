"""The emulator's own exceptions and the Azure-shaped error bodies it sends.

::

    EmulatorError                 the emulator could not do what was asked
     +-- PortInUseError (OSError) the port to bind is taken
    FaultSpecError (ValueError)   a fault spec that does not parse
    BadRequest                    (internal) a request body the endpoint refuses with 400

Error *bodies* follow what Azure ML really sends, which is not one shape (reference section 2.9): the platform
front end (auth, routing, throttling) answers ``{"error": {"code", "message"}}``, while the inference server
inside a ``/score`` container answers ``{"message": "..."}``. Clients must parse both, so the emulator sends both.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "EmulatorError",
    "FaultSpecError",
    "PortInUseError",
    "openai_error",
    "platform_error",
    "score_error",
]


class EmulatorError(Exception):
    """The emulator could not start, stop or serve as asked."""


class PortInUseError(EmulatorError, OSError):
    """The address to bind is already in use; the message names the host and port."""


class FaultSpecError(ValueError):
    """A fault spec (``x-emulator-fault``, ``[[fault:...]]``, ``--fault``) that does not parse or makes no sense."""


class BadRequest(Exception):
    """A request the endpoint would refuse with 400; ``param`` names the offending field. Never leaves the
    server: the application turns it into the route's error body."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def openai_error(exc: BadRequest) -> dict[str, Any]:
    """A 400 body in the shape of the OpenAI-compatible and model-inference routes."""
    return {
        "error": {
            "code": "BadRequest",
            "message": exc.message,
            "param": exc.param,
            "type": "invalid_request_error",
        }
    }


def platform_error(code: str, message: str) -> dict[str, Any]:
    """An error body in the shape of the Azure ML front end and ARM: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


def score_error(message: str) -> dict[str, Any]:
    """An error body in the shape of ``azureml-inference-server-http`` inside a ``/score`` container."""
    return {"message": message}
