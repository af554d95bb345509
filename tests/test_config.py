"""Client configuration: env fallbacks, URL forms, checks, timeouts, the masked key (``_config.py``,
``_endpoint.py``).

Constructing a client does no I/O (the session is created on first use), so none of these tests touch a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from azureml_chat import (
    AssistantMessage,
    AsyncChatClient,
    ChatResponse,
    ConfigurationError,
    ContentFormatter,
    RetryPolicy,
    Route,
    Secret,
    Timeout,
)
from azureml_chat._messages import Message
from azureml_chat._transport import AiohttpTransport

pytestmark = pytest.mark.usefixtures("hermetic_env")

KEY = "k-3f9a0c1d"
DEDICATED = "https://my-endpoint.eastus2.inference.ml.azure.com/score"
SERVERLESS = "https://Meta-Llama-3-8B-abcd.eastus2.models.ai.azure.com/v1/chat/completions"


def client(url: str | None = DEDICATED, key: str | None = KEY, **options: Any) -> AsyncChatClient:
    return AsyncChatClient(url, key, **options)


# --- environment variables ------------------------------------------------------------------------------------


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no arguments, ``AZUREML_ENDPOINT_URL`` and ``AZUREML_ENDPOINT_API_KEY`` configure the client."""
    monkeypatch.setenv("AZUREML_ENDPOINT_URL", SERVERLESS)
    monkeypatch.setenv("AZUREML_ENDPOINT_API_KEY", KEY)
    configured = AsyncChatClient()
    assert SERVERLESS == configured.endpoint_url
    assert configured._endpoint.api_key is not None
    assert KEY == configured._endpoint.api_key.get_secret_value()


@pytest.mark.parametrize(
    ("value", "expected_url", "expected_type"),
    [
        ("serverless", "https://h.eastus2.models.ai.azure.com/v1/chat/completions", "serverless"),
        ("dedicated", "https://h.eastus2.models.ai.azure.com/score", "dedicated"),
        ("realtime", "https://h.eastus2.models.ai.azure.com/score", "dedicated"),
    ],
)
def test_endpoint_type_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected_url: str, expected_type: str
) -> None:
    """``AZUREML_ENDPOINT_API_TYPE`` picks the default route of a bare host ("realtime" means dedicated)."""
    monkeypatch.setenv("AZUREML_ENDPOINT_API_TYPE", value)
    configured = client("https://h.eastus2.models.ai.azure.com")
    assert (expected_url, expected_type) == (configured.endpoint_url, configured.endpoint_type)


def test_deployment_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AZUREML_DEPLOYMENT_NAME`` is the client's deployment when none is passed."""
    monkeypatch.setenv("AZUREML_DEPLOYMENT_NAME", "blue")
    assert "blue" == client()._endpoint.deployment


def test_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AZUREML_TIMEOUT`` (seconds, as text) becomes the per-attempt read and total timeout."""
    monkeypatch.setenv("AZUREML_TIMEOUT", "30")
    timeout = client()._config.timeout
    assert (30.0, 30.0) == (timeout.read, timeout.total)
    assert timeout.connect is not None
    assert timeout.connect <= 30.0


def test_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit arguments win over every ``AZUREML_*`` variable."""
    monkeypatch.setenv("AZUREML_ENDPOINT_URL", SERVERLESS)
    monkeypatch.setenv("AZUREML_ENDPOINT_API_KEY", "env-key")
    monkeypatch.setenv("AZUREML_ENDPOINT_API_TYPE", "serverless")
    monkeypatch.setenv("AZUREML_DEPLOYMENT_NAME", "blue")
    monkeypatch.setenv("AZUREML_TIMEOUT", "30")
    configured = client(DEDICATED, KEY, endpoint_type="dedicated", deployment="green", timeout=5)
    endpoint = configured._endpoint
    assert DEDICATED == configured.endpoint_url
    assert "dedicated" == configured.endpoint_type
    assert endpoint.api_key is not None
    assert KEY == endpoint.api_key.get_secret_value()
    assert "green" == configured.deployment
    assert 5.0 == configured.timeout.total


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_bad_timeout_variable_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An ``AZUREML_TIMEOUT`` that is not a positive, finite number of seconds is refused, naming the variable."""
    monkeypatch.setenv("AZUREML_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match="AZUREML_TIMEOUT"):
        client()


def test_proxy_is_read_once_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTPS_PROXY`` is resolved once per URL for its scheme (no per-request env lookup)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    transport = AiohttpTransport()
    assert "http://proxy.internal:3128" == transport.proxy_for(DEDICATED)
    monkeypatch.delenv("HTTPS_PROXY")
    assert "http://proxy.internal:3128" == transport.proxy_for(DEDICATED)


def test_no_proxy_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host matched by ``NO_PROXY`` is reached directly."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", ".inference.ml.azure.com")
    assert AiohttpTransport().proxy_for(DEDICATED) is None


# --- URL forms -------------------------------------------------------------------------------------------------

URL_TABLE = [
    # (id, given url, endpoint_type, expected url, route, endpoint type)
    ("score", DEDICATED, None, DEDICATED, Route.SCORE, "dedicated"),
    ("score-trailing-slash", DEDICATED + "/", None, DEDICATED, Route.SCORE, "dedicated"),
    ("v1-chat-completions", SERVERLESS, None, SERVERLESS, Route.CHAT_COMPLETIONS, "serverless"),
    (
        "chat-completions-api-version",
        "https://h.eastus2.models.ai.azure.com/chat/completions?api-version=2024-05-01-preview",
        None,
        "https://h.eastus2.models.ai.azure.com/chat/completions?api-version=2024-05-01-preview",
        Route.CHAT_COMPLETIONS,
        "serverless",
    ),
    (
        "models-chat-completions-api-version",
        "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview",
        None,
        "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview",
        Route.CHAT_COMPLETIONS,
        "serverless",
    ),
    (
        "vllm-on-managed-endpoint",
        "https://my-endpoint.eastus2.inference.ml.azure.com/v1/chat/completions",
        None,
        "https://my-endpoint.eastus2.inference.ml.azure.com/v1/chat/completions",
        Route.CHAT_COMPLETIONS,
        "dedicated",
    ),
    (
        "bare-managed-host",
        "https://my-endpoint.eastus2.inference.ml.azure.com",
        None,
        DEDICATED,
        Route.SCORE,
        "dedicated",
    ),
    (
        "bare-host-serverless",
        "https://h.eastus2.models.ai.azure.com/",
        "serverless",
        "https://h.eastus2.models.ai.azure.com/v1/chat/completions",
        Route.CHAT_COMPLETIONS,
        "serverless",
    ),
    (
        "bare-host-dedicated",
        "https://10.0.0.5:8443",
        "dedicated",
        "https://10.0.0.5:8443/score",
        Route.SCORE,
        "dedicated",
    ),
    (
        "placeholder-host",
        "https://<your-endpoint>.<your_region>.inference.ml.azure.com/score",
        None,
        "https://<your-endpoint>.<your_region>.inference.ml.azure.com/score",
        Route.SCORE,
        "dedicated",
    ),
    (
        "uppercase-scheme",
        "HTTPS://my-endpoint.eastus2.inference.ml.azure.com/score",
        None,
        DEDICATED,
        Route.SCORE,
        "dedicated",
    ),
    (
        "loopback-http",
        "http://127.0.0.1:8000/score",
        None,
        "http://127.0.0.1:8000/score",
        Route.SCORE,
        "dedicated",
    ),
    (
        "v1-text-completions",
        "https://h.eastus2.models.ai.azure.com/v1/completions",
        None,
        "https://h.eastus2.models.ai.azure.com/v1/completions",
        Route.COMPLETIONS,
        "serverless",
    ),
    (
        "text-completions-api-version",
        "https://h.eastus2.models.ai.azure.com/completions?api-version=2024-05-01-preview",
        None,
        "https://h.eastus2.models.ai.azure.com/completions?api-version=2024-05-01-preview",
        Route.COMPLETIONS,
        "serverless",
    ),
    (
        "vllm-text-completions-on-managed-endpoint",
        "https://my-endpoint.eastus2.inference.ml.azure.com/v1/completions",
        None,
        "https://my-endpoint.eastus2.inference.ml.azure.com/v1/completions",
        Route.COMPLETIONS,
        "dedicated",
    ),
]


@pytest.mark.parametrize(
    ("url", "endpoint_type", "expected_url", "route", "expected_type"),
    [row[1:] for row in URL_TABLE],
    ids=[row[0] for row in URL_TABLE],
)
def test_url_forms(
    url: str, endpoint_type: str | None, expected_url: str, route: Route, expected_type: str
) -> None:
    """Every accepted URL form constructs, keeps ``?api-version=``, and resolves its route and endpoint type."""
    configured = client(url, endpoint_type=endpoint_type)
    assert expected_url == configured.endpoint_url
    assert route == configured._endpoint.route
    assert expected_type == configured.endpoint_type


BAD_URLS: list[tuple[str, Any, str | None]] = [
    ("empty", "", None),
    ("blank", "   ", None),
    ("not-a-string", 123, None),
    ("ftp-scheme", "ftp://h.eastus2.inference.ml.azure.com/score", None),
    ("no-scheme", "h.eastus2.inference.ml.azure.com/score", None),
    ("no-host", "https:///score", None),
    ("embeddings", "https://h.eastus2.models.ai.azure.com/v1/embeddings", None),
    ("unknown-route", "https://h.eastus2.inference.ml.azure.com/predict", None),
    ("bare-unknown-host", "https://example.com", None),
    ("serverless-score", DEDICATED, "serverless"),
    ("bad-endpoint-type", DEDICATED, "edge"),
]


@pytest.mark.parametrize(
    ("url", "endpoint_type"), [row[1:] for row in BAD_URLS], ids=[row[0] for row in BAD_URLS]
)
def test_bad_urls_are_configuration_errors(url: Any, endpoint_type: str | None) -> None:
    """A URL without http(s), host or a chat route, or a type that contradicts it, fails at construction."""
    with pytest.raises(ConfigurationError) as caught:
        client(url, endpoint_type=endpoint_type)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        "https://someone:hunter2@h.eastus2.inference.ml.azure.com/score",
        "ftp://someone:hunter2@h.eastus2.inference.ml.azure.com/score",
    ],
)
def test_credentials_in_the_url_are_refused_without_repeating_them(url: str) -> None:
    """A URL with user:password@ is a ConfigurationError that says what to pass instead and never quotes it."""
    with pytest.raises(ConfigurationError, match="api_key= or credential=") as caught:
        client(url)
    assert [] == [word for word in ("hunter2", "someone") if word in str(caught.value)]


def test_a_score_url_declared_serverless_suggests_the_urls_that_work() -> None:
    """A /score URL with endpoint_type="serverless" suggests the serverless chat completions URLs, or dedicated."""
    with pytest.raises(ConfigurationError) as caught:
        client("https://x.inference.ml.azure.com/score", endpoint_type="serverless")
    text = str(caught.value)
    assert "https://<deployment>.<region>.models.ai.azure.com/v1/chat/completions" in text
    assert ".../chat/completions, .../models/chat/completions" in text
    assert "For this /score URL, pass endpoint_type='dedicated'" in text


def test_missing_url_names_the_variable() -> None:
    """With no URL anywhere, the error says to pass one or set ``AZUREML_ENDPOINT_URL``."""
    with pytest.raises(ConfigurationError, match="AZUREML_ENDPOINT_URL"):
        client(None)


def test_text_completions_url_defaults_to_the_openai_family() -> None:
    """A ``/v1/completions`` URL constructs with the ``openai`` family, which completes text there."""
    assert "openai" == client("https://h.eastus2.models.ai.azure.com/v1/completions").formatter.name


@pytest.mark.parametrize("family", ["llama", "custom-openai", "mistral"])
def test_chat_family_on_the_text_completions_url_is_refused(family: str) -> None:
    """A chat-only family on a ``/v1/completions`` URL fails at construction, saying it is the text route."""
    with pytest.raises(ConfigurationError, match="text completion route"):
        client("https://h.eastus2.models.ai.azure.com/v1/completions", formatter=family)


@pytest.mark.parametrize(
    "url",
    [SERVERLESS, "https://h.eastus2.models.ai.azure.com/v1/completions"],
    ids=["chat-completions", "text-completions"],
)
@pytest.mark.parametrize("family", ["gpt2", "hf", "dolly"])
def test_text_generation_family_off_score_is_refused(family: str, url: str) -> None:
    """A /score text-generation family on any other route fails at construction, pointing at /score."""
    with pytest.raises(ConfigurationError, match="text-generation family; use its /score URL"):
        client(url, formatter=family)


# --- plain http ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/score",
        "http://10.0.0.5/score",
        "HTTP://my-endpoint.eastus2.inference.ml.azure.com/score",
    ],
)
def test_key_over_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    """Sending a key over http:// to a host that is not this machine is refused at construction."""
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        client(url)


@pytest.mark.parametrize("url", ["http://example.com/score", "http://10.0.0.5/score"])
def test_plain_http_to_a_remote_host_can_be_allowed(url: str) -> None:
    """``allow_insecure_http=True`` lets a deliberate http:// endpoint through."""
    assert url == client(url, allow_insecure_http=True).endpoint_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/score",
        "http://localhost:8000/score",
        "http://[::1]:8000/score",
        "http://127.8.9.10/score",
    ],
)
def test_plain_http_to_loopback_is_fine(url: str) -> None:
    """http:// to this machine (an emulator, a tunnel) needs no opt-in."""
    assert url == client(url).endpoint_url


# --- key -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "   "], ids=["none", "empty", "blank"])
def test_missing_key_is_a_configuration_error(key: str | None) -> None:
    """Without a key (argument or ``AZUREML_ENDPOINT_API_KEY``) the client refuses to build, naming the variable."""
    with pytest.raises(ConfigurationError, match="AZUREML_ENDPOINT_API_KEY"):
        client(DEDICATED, key)


def test_key_must_be_a_string() -> None:
    """A non-string key is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="api_key"):
        client(DEDICATED, 12345)  # type: ignore[arg-type]


def test_secret_is_masked() -> None:
    """A Secret never shows its value in ``repr`` or ``str``, but hands it over on request."""
    secret = Secret(KEY)
    assert KEY not in repr(secret)
    assert KEY not in str(secret)
    assert KEY not in f"{secret}"
    assert KEY == secret.get_secret_value()


def test_a_secret_can_be_passed_as_the_key() -> None:
    """A ``Secret`` is accepted as ``api_key`` as is."""
    assert KEY == client(DEDICATED, Secret(KEY))._endpoint.api_key.get_secret_value()  # type: ignore[arg-type,union-attr]


def test_repr_of_client_and_config_never_shows_the_key() -> None:
    """Neither ``repr(client)`` nor its resolved configuration contains the key."""
    configured = client(DEDICATED, KEY, auth_header="both", deployment="blue")
    assert KEY not in repr(configured)
    assert KEY not in repr(configured._config)
    assert "blue" in repr(configured)


# --- formatter ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"), [(DEDICATED, "llama"), (SERVERLESS, "openai")], ids=["score", "chat-completions"]
)
def test_default_formatter_follows_the_route(url: str, expected: str) -> None:
    """No formatter given: /score speaks ``llama``, chat completions speak ``openai`` (DESIGN.md)."""
    assert expected == client(url).formatter.name


def test_formatter_by_name_or_alias() -> None:
    """A family name (or alias) picks the registered formatter."""
    assert "mistral" == client(SERVERLESS, formatter="mistral").formatter.name
    assert "llama" == client(DEDICATED, formatter="custom-openai").formatter.name


def test_unknown_formatter_lists_the_known_ones() -> None:
    """An unknown family is refused at construction with the list of known families."""
    with pytest.raises(ConfigurationError) as caught:
        client(formatter="falcon-chat")
    for known in ("openai", "llama", "custom-openai", "mistral"):
        assert known in str(caught.value)


class ScoreOnly(ContentFormatter):
    name: ClassVar[str] = "score-only"
    routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        return {"prompt": messages[-1].content}

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        return ChatResponse(message=AssistantMessage(body["text"]))


def test_formatter_instance_is_used_as_given() -> None:
    """A ContentFormatter instance is used directly, unregistered."""
    formatter = ScoreOnly()
    assert formatter is client(DEDICATED, formatter=formatter).formatter


def test_formatter_route_mismatch_is_a_configuration_error() -> None:
    """A formatter that cannot speak the URL's route is refused at construction, naming both."""
    with pytest.raises(ConfigurationError) as caught:
        client(SERVERLESS, formatter=ScoreOnly())
    assert "score-only" in str(caught.value)
    assert "chat/completions" in str(caught.value)


# --- timeouts ----------------------------------------------------------------------------------------------------


def test_timeout_from_seconds() -> None:
    """A number of seconds sets read and total, and caps connect at that number too."""
    timeout = Timeout.coerce(2.5)
    assert (2.5, 2.5) == (timeout.read, timeout.total)
    assert timeout.connect is not None
    assert 0 < timeout.connect <= 2.5


def test_timeout_object_is_kept() -> None:
    """A Timeout passed in is used as is."""
    timeout = Timeout(connect=1, read=None, total=None)
    assert timeout is Timeout.coerce(timeout)
    assert timeout == client(timeout=timeout)._config.timeout


def test_int_seconds_become_a_timeout() -> None:
    """``timeout=20`` on the client is a 20-second read and total timeout."""
    timeout = client(timeout=20)._config.timeout
    assert (20.0, 20.0) == (timeout.read, timeout.total)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "30", True], ids=repr)
def test_bad_timeout_seconds_are_refused(value: Any) -> None:
    """Zero, negative, NaN, infinite, text and bool timeouts are refused at construction."""
    with pytest.raises(ConfigurationError, match="timeout"):
        client(timeout=value)


@pytest.mark.parametrize("field", ["connect", "read", "total"])
@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf, "1"], ids=repr)
def test_bad_timeout_fields_are_refused(field: str, value: Any) -> None:
    """Each Timeout field must be a positive, finite number of seconds (or None), and the error names the field."""
    with pytest.raises(ConfigurationError, match=field):
        Timeout(**{field: value})


# --- the rest of the constructor ------------------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", ["blue green", "blue\r\nx-evil: 1", "", "-blue", 7], ids=repr)
def test_bad_deployment_is_refused(deployment: Any) -> None:
    """A deployment that is not a plain header token (letters, digits, ``._-``) fails at construction."""
    with pytest.raises(ConfigurationError, match="deployment"):
        client(deployment=deployment)


@pytest.mark.parametrize(
    "headers",
    [{"x-team": "a\r\nx-evil: 1"}, {"x-team\n": "a"}, {"x-team": 1}],
    ids=["crlf-value", "newline-name", "non-string"],
)
def test_bad_extra_headers_are_refused(headers: Any) -> None:
    """Extra headers with line breaks or non-string values fail at construction (no header injection)."""
    with pytest.raises(ConfigurationError, match="headers"):
        client(headers=headers)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("auth_header", "basic"),
        ("extra_parameters", "ignore"),
        ("max_retries", -1),
        ("max_retries", "3"),
        ("max_connections", 0),
        ("max_connections", 2.5),
        ("model_kwargs", [("temperature", 0.1)]),
    ],
    ids=lambda value: repr(value),
)
def test_bad_options_are_configuration_errors(option: str, value: Any) -> None:
    """Every other constructor option is checked at construction, and the error names it."""
    with pytest.raises(ConfigurationError, match=option):
        client(**{option: value})


def test_max_retries_overrides_the_policys_count() -> None:
    """``max_retries=`` beside ``retry=`` keeps the policy's delays and replaces its count."""
    policy = RetryPolicy(max_retries=5, initial_delay=0.25)
    assert RetryPolicy(max_retries=1, initial_delay=0.25) == client(retry=policy, max_retries=1)._config.retry


def test_model_kwargs_are_copied_at_construction() -> None:
    """Changing the caller's ``model_kwargs`` dict after construction does not change the client."""
    model_kwargs = {"temperature": 0.1}
    configured = client(model_kwargs=model_kwargs)
    model_kwargs["temperature"] = 0.9
    model_kwargs["seed"] = 1
    assert {"temperature": 0.1} == dict(configured._config.model_kwargs)
