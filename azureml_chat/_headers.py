"""The headers of a request (pure, except for fetching a token): the endpoint's own, our request id, the
deployment, Azure's ``extra-parameters`` rule, the call's ``extra_headers``, and the credential's bearer token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _defaults
from ._call import Call
from ._config import check_header_token, check_headers
from ._endpoint import ResolvedEndpoint
from ._errors import ConfigurationError, InvalidRequestError
from ._params import MODEL_INFERENCE_CHAT_FIELDS, MODEL_INFERENCE_TEXT_FIELDS
from .formatters import Route

__all__ = ["authorized", "call_headers"]


def call_headers(
    endpoint: ResolvedEndpoint,
    request_id: str,
    deployment: str | None,
    extra_headers: Mapping[str, str] | None,
    params: Mapping[str, Any],
) -> dict[str, str]:
    """The headers of a call to ``endpoint``: the endpoint's, the request id, the deployment, then the call's own.

    On an Azure AI Model Inference route, a call with parameters outside that API's schema (``top_k``,
    ``safe_prompt``, ...) carries ``extra-parameters: pass-through`` (the service's default, ``error``, answers
    400 to them), as azure-ai-inference does for its ``model_extras``, unless the user chose a value: the
    client's ``extra_parameters=`` or ``headers=``, or the call's ``extra_headers=`` (applied after). Not on
    ``/score`` (no such header) nor on the provider-native ``/v1/`` routes, which pass every field to the model
    (:func:`~azureml_chat._endpoint.is_model_inference`).
    """
    headers = dict(endpoint.headers)
    headers["x-ms-client-request-id"] = request_id
    if endpoint.model_inference and "extra-parameters" not in headers:
        schema = (
            MODEL_INFERENCE_TEXT_FIELDS
            if endpoint.route is Route.COMPLETIONS
            else MODEL_INFERENCE_CHAT_FIELDS
        )
        if not params.keys() <= schema:
            headers["extra-parameters"] = "pass-through"
    chosen = deployment if deployment is not None else endpoint.deployment
    try:
        if chosen is not None:
            headers["azureml-model-deployment"] = check_header_token(chosen, "deployment")
        if extra_headers:
            headers.update(check_headers(extra_headers, "extra_headers"))
    except ConfigurationError as exc:
        raise InvalidRequestError(str(exc)) from None
    if extra_headers:  # our own id is always valid; a caller's replacement may not be
        sent_id = headers["x-ms-client-request-id"]
        if len(sent_id) > _defaults.MAX_CLIENT_REQUEST_ID or not _is_request_id(sent_id):
            raise InvalidRequestError(
                f"x-ms-client-request-id must be 1-{_defaults.MAX_CLIENT_REQUEST_ID} letters, digits or '-'"
            )
    return headers


def _is_request_id(value: str) -> bool:
    return bool(value) and value.isascii() and value.replace("-", "").isalnum()


async def authorized(call: Call[Any, Any]) -> dict[str, str]:
    """The call's headers with a bearer token from the endpoint's credential (unless a header already
    authorizes it)."""
    auth = call.endpoint.auth
    if auth is None or "authorization" in call.headers:
        return call.headers
    return {**call.headers, "authorization": f"Bearer {await auth.token()}"}
