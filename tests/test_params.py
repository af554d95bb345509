"""Call parameters: merge order, no shared state, reserved names and type checks (``_params.py``)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from azureml_chat import InvalidRequestError
from azureml_chat._params import given, merge_params

NO_COMMON: dict[str, Any] = {}


def test_merge_order_model_kwargs_then_common_then_extra() -> None:
    """``model_kwargs`` < common keywords < other keywords: each layer overrides the one before it."""
    model_kwargs = {"temperature": 0.1, "top_p": 0.9, "max_tokens": 100, "safe_prompt": False}
    common = {"temperature": 0.5, "max_tokens": 10}
    extra = {"safe_prompt": True, "max_tokens": 7}
    expected = {"temperature": 0.5, "top_p": 0.9, "max_tokens": 7, "safe_prompt": True}
    assert expected == merge_params(model_kwargs, common, extra)


def test_keys_are_ordered_by_the_layer_that_set_them_last() -> None:
    """A key overridden by a later layer moves after the keys of earlier layers (formatters rely on it for aliases)."""
    merged = merge_params(
        {"max_new_tokens": 256, "temperature": 0.1}, {"max_tokens": 5, "temperature": 0.5}, {}
    )
    assert ["max_new_tokens", "max_tokens", "temperature"] == list(merged)


def test_unset_common_keywords_do_not_override_model_kwargs() -> None:
    """A common keyword left at None is not given: it neither overrides ``model_kwargs`` nor appears in the body."""
    common = given(temperature=None, seed=None, stop=None)
    assert {} == common
    assert {"temperature": 0.1} == merge_params({"temperature": 0.1}, common, {})


def test_falsy_values_are_given_and_only_none_is_dropped() -> None:
    """``temperature=0``, ``seed=0`` or ``stop=[]`` are real choices; only ``None`` means "not given"."""
    assert {"temperature": 0, "seed": 0, "stop": []} == given(temperature=0, top_p=None, seed=0, stop=[])


def test_chat_keywords_are_named_by_their_own_parameter() -> None:
    """``chat``'s spelled-out helper maps every common keyword to its own name, falsy values kept."""
    names = [
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "presence_penalty",
        "frequency_penalty",
    ]
    values = [0.0, 0.5, 7, [], 0, [{"type": "function"}], "auto", {"type": "text"}, 0.1, -0.1]
    assert dict(zip(names, values, strict=True)) == given(*values)
    for position, name in enumerate(names):
        only_one = [None] * len(names)
        only_one[position] = values[position]
        assert {name: values[position]} == given(*only_one)


def test_merge_returns_a_fresh_dict_and_leaves_inputs_alone() -> None:
    """The merged dict is new: changing it changes neither ``model_kwargs`` nor the next call's result."""
    model_kwargs = {"temperature": 0.1, "stop": ["END"]}
    snapshot = {"temperature": 0.1, "stop": ["END"]}
    first = merge_params(model_kwargs, {"max_tokens": 5}, {"best_of": 2})
    first["temperature"] = 99
    first["stop"].append("LEAK")
    assert snapshot == model_kwargs
    assert {"temperature": 0.1, "stop": ["END"]} == merge_params(model_kwargs, NO_COMMON, {})


def test_read_only_model_kwargs_are_accepted() -> None:
    """A read-only mapping (the client's frozen copy) merges like a dict."""
    assert {"temperature": 0.2, "seed": 3} == merge_params(
        MappingProxyType({"temperature": 0.2}), {"seed": 3}, {}
    )


@pytest.mark.parametrize("name", ["stream", "messages"])
@pytest.mark.parametrize("layer", ["model_kwargs", "extra"])
def test_reserved_names_are_rejected(name: str, layer: str) -> None:
    """``stream`` and ``messages`` belong to the client; passing them as model parameters is an error."""
    model_kwargs = {name: True} if layer == "model_kwargs" else {}
    extra = {name: True} if layer == "extra" else {}
    with pytest.raises(InvalidRequestError, match=name):
        merge_params(model_kwargs, NO_COMMON, extra)


BAD_VALUES = [
    ("temperature", "hot"),
    ("temperature", True),
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("top_p", "0.9"),
    ("presence_penalty", [1]),
    ("frequency_penalty", float("-inf")),
    ("max_tokens", 0),
    ("max_tokens", -1),
    ("max_tokens", 1.5),
    ("max_tokens", "64"),
    ("max_tokens", True),
    ("seed", 1.5),
    ("seed", "42"),
    ("seed", False),
    ("stop", 5),
    ("stop", ["END", 1]),
    ("stop", {"END"}),
    ("tools", {"type": "function", "function": {"name": "f"}}),
    ("tools", [{"type": "function"}]),
    ("tools", [{"function": {"name": "f"}}]),
    ("tools", [{"type": "function", "function": {"name": 5}}]),
    ("tools", ["get_weather"]),
    ("tool_choice", "sometimes"),
    ("tool_choice", {"type": "function"}),
    ("tool_choice", {"type": "function", "function": {"name": None}}),
    ("response_format", "json_object"),
    ("response_format", {"type": "xml"}),
    ("response_format", {"type": "json_schema"}),
]


@pytest.mark.parametrize(
    ("name", "value"), BAD_VALUES, ids=[f"{name}={value!r}" for name, value in BAD_VALUES]
)
@pytest.mark.parametrize("layer", ["common", "model_kwargs"])
def test_bad_common_parameter_types_are_rejected(name: str, value: Any, layer: str) -> None:
    """A common parameter of the wrong type or range is an InvalidRequestError naming it, wherever it came from."""
    model_kwargs = {name: value} if layer == "model_kwargs" else {}
    common = {name: value} if layer == "common" else {}
    with pytest.raises(InvalidRequestError) as caught:
        merge_params(model_kwargs, common, {})
    assert name in str(caught.value)


GOOD_VALUES = [
    ("temperature", 0),
    ("temperature", 1.5),
    ("top_p", 1),
    ("presence_penalty", -2.0),
    ("max_tokens", 1),
    ("seed", -7),
    ("stop", "END"),
    ("stop", ["END", "\n\n"]),
    ("tools", [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]),
    ("tool_choice", "auto"),
    ("tool_choice", "none"),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "get_weather"}}),
    ("response_format", {"type": "text"}),
    ("response_format", {"type": "json_object"}),
    (
        "response_format",
        {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
    ),
]


@pytest.mark.parametrize(
    ("name", "value"), GOOD_VALUES, ids=[f"{name}={value!r}" for name, value in GOOD_VALUES]
)
def test_valid_common_parameters_pass_unchanged(name: str, value: Any) -> None:
    """Every valid value of a common parameter (azure_protocol.md 2.4, 2.7, 2.8) goes through as given."""
    assert {name: value} == merge_params({}, {name: value}, {})


def test_stop_and_tools_tuples_become_lists() -> None:
    """Tuples are accepted for ``stop`` and ``tools`` and sent as JSON arrays (lists)."""
    tool = {"type": "function", "function": {"name": "f"}}
    assert {"stop": ["a", "b"], "tools": [tool]} == merge_params(
        {}, {"stop": ("a", "b"), "tools": (tool,)}, {}
    )


def test_unknown_model_parameters_pass_through_unchecked() -> None:
    """Parameters the SDK does not know (vLLM's ``best_of``, Mistral's ``safe_prompt``) are passed as given."""
    extra = {"best_of": 3, "safe_prompt": True, "logit_bias": {"50256": -100}}
    assert extra == merge_params({}, NO_COMMON, extra)


def test_invalid_request_error_is_a_value_error() -> None:
    """A bad parameter can be caught as a ValueError too."""
    with pytest.raises(ValueError):
        merge_params({}, {"temperature": "hot"}, {})
