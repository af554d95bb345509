"""Call parameters: merge order, no shared state, reserved names and type checks (``_params.py``)."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

import pytest

from azureml_chat import InvalidRequestError
from azureml_chat._params import check_names, given, merge_params

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
        "max_completion_tokens",
    ]
    values = [0.0, 0.5, 7, [], 0, [{"type": "function"}], "auto", {"type": "text"}, 0.1, -0.1, 9]
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
    ("max_completion_tokens", 0),
    ("max_completion_tokens", 1.5),
    ("max_completion_tokens", "64"),
    ("max_completion_tokens", False),
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
    ("max_completion_tokens", 1),
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


# --- misspelt keywords --------------------------------------------------------------------------------------------

MISSPELT: list[tuple[str, str]] = [
    # (what was typed, the suggestion the error must make)
    ("max_token", "max_tokens"),  # a letter missing
    ("temprature", "temperature"),
    ("temperatrue", "temperature"),  # two neighbours swapped: one edit
    ("maxTokens", "max_tokens"),  # camelCase: the same name once folded
    ("Temperature", "temperature"),
    ("top_pp", "top_p"),
    ("tpo_p", "top_p"),
    ("topp", "top_p"),
    ("topk", "top_k"),  # near top_p, nearer the model parameter top_k: suggested as such
    ("stpo", "stop"),
    ("seeds", "seed"),
    ("tool", "tools"),
    ("tool_choices", "tool_choice"),
    ("toolchoice", "tool_choice"),
    ("respone_format", "response_format"),
    ("responseFormat", "response_format"),
    ("presense_penalty", "presence_penalty"),
    ("frequence_penalty", "frequency_penalty"),
    ("max_tokes", "max_tokens"),
    ("max_completion_token", "max_completion_tokens"),
    ("maxCompletionTokens", "max_completion_tokens"),
    ("timout", "timeout"),
    ("deploymnet", "deployment"),
    ("extra_header", "extra_headers"),
    ("message", "messages"),
]


@pytest.mark.parametrize(("typed", "meant"), MISSPELT, ids=[row[0] for row in MISSPELT])
def test_a_misspelt_keyword_is_refused_with_the_nearest_name(typed: str, meant: str) -> None:
    """A keyword within a typo's reach of a call keyword is an InvalidRequestError suggesting the nearest name."""
    with pytest.raises(InvalidRequestError, match=re.escape(f"did you mean {meant}?")):
        merge_params({}, NO_COMMON, {typed: 1})


# Real model parameters of OpenAI, vLLM, Hugging Face TGI / transformers, Mistral and llama.cpp servers: each must
# pass as a call keyword, unchanged.
REAL_PARAMETERS = [
    "top_k",  # one edit from top_p
    "top_a",
    "top_n",
    "min_p",
    "min_tokens",  # two edits from max_tokens
    "best_of",
    "n",
    "safe_prompt",
    "random_seed",
    "repetition_penalty",
    "length_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "max_new_tokens",
    "max_completion_tokens",
    "stream_options",
    "parallel_tool_calls",
    "reasoning_effort",
    "service_tier",
    "typical_p",
    "do_sample",
    "return_full_text",
    "num_beams",
    "num_return_sequences",
    "stop_token_ids",
    "stop_sequences",
    "ignore_eos",
    "skip_special_tokens",
    "use_beam_search",
    "early_stopping",
    "guided_json",
    "echo",
    "suffix",
    "details",
    "decoder_input_details",
    "watermark",
    "truncate",
    "top_n_tokens",
    "no_repeat_ngram_size",
    "mirostat_tau",
    "repeat_penalty",
    "tfs_z",
    "n_predict",
    "model",
    "metadata",
    "store",
]


@pytest.mark.parametrize("name", REAL_PARAMETERS)
def test_real_model_parameters_pass_as_keywords(name: str) -> None:
    """A real model parameter, even one a single edit from a common name (top_k, top_p), is passed through."""
    assert {name: 1} == merge_params({}, NO_COMMON, {name: 1})


def test_model_kwargs_are_not_checked_by_name() -> None:
    """model_kwargs is the explicit route: a name there is sent as spelled, whatever it looks like."""
    assert {"max_token": 5, "temprature": 0.2} == merge_params(
        {"max_token": 5, "temprature": 0.2}, NO_COMMON, {}
    )


def test_the_error_names_the_explicit_route() -> None:
    """The refusal says how to send the name as spelled: model_kwargs=, on the constructor or with_options()."""
    with pytest.raises(InvalidRequestError) as caught:
        merge_params({}, NO_COMMON, {"max_token": 10})
    text = str(caught.value)
    assert "Nothing was sent" in text
    assert "AsyncChatClient(..., model_kwargs={'max_token': ...})" in text
    assert "client.with_options(model_kwargs=...)" in text


def test_a_batch_also_checks_its_own_keywords() -> None:
    """check_names measures names against the keywords it is given too (a batch's concurrency)."""
    with pytest.raises(InvalidRequestError, match=re.escape("did you mean concurrency?")):
        check_names({"concurency": 2}, ("concurrency", "return_exceptions"))
    check_names({"concurrency": 2, "temperature": 0.1}, ("concurrency", "return_exceptions"))


# --- max_tokens and max_completion_tokens: two names for one limit --------------------------------------------

BOTH_LIMITS = [
    ({}, {"max_tokens": 5, "max_completion_tokens": 5}, {}),
    ({"max_tokens": 256}, {"max_completion_tokens": 5}, {}),
    ({"max_completion_tokens": 256}, {"max_tokens": 5}, {}),
    ({}, {"max_tokens": 5}, {"max_completion_tokens": 5}),
]


@pytest.mark.parametrize(
    ("model_kwargs", "common", "extra"), BOTH_LIMITS, ids=["call", "kwargs-then-call", "kwargs-mct", "extra"]
)
def test_both_length_limits_are_refused(
    model_kwargs: dict[str, Any], common: dict[str, Any], extra: dict[str, Any]
) -> None:
    """max_tokens with max_completion_tokens, from any layers, is refused before sending (OpenAI answers 400)."""
    with pytest.raises(InvalidRequestError, match="max_tokens or max_completion_tokens, not both") as caught:
        merge_params(model_kwargs, common, extra)
    assert "model_kwargs" in str(caught.value)


def test_max_completion_tokens_alone_is_sent_as_given() -> None:
    """max_completion_tokens alone passes, under its own name (no family renames it to max_tokens)."""
    assert {"max_completion_tokens": 64, "temperature": 0} == merge_params(
        {"temperature": 0}, given(max_completion_tokens=64), {}
    )
