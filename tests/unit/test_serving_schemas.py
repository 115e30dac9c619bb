"""Request validation: the bodies OpenAI's API refuses are refused with 400, `param` naming the field; the same
models are what /openapi.json publishes."""

from __future__ import annotations

import time

import pytest

from serving.schemas import (
    ChatCompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
    RequestInvalid,
    openapi_schemas,
    validate_request,
)

USER = {"role": "user", "content": "How long is the run-in period?"}


def chat(**kw):
    return {"model": "support-assistant", "messages": [USER], **kw}


def refused(model, body) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as e:
        validate_request(model, body)
    return e.value


@pytest.mark.parametrize("body", [
    chat(),
    chat(temperature=0, top_p=1, n=1, max_tokens=1, presence_penalty=-2, frequency_penalty=2, seed=7, stop="\n"),
    chat(temperature=2, stop=["a", "b", "c", "d"], stream=True, stream_options={"include_usage": True}),
    chat(messages=[{"role": "system", "content": "Be brief."}, {"role": "developer", "content": [{"type": "text", "text": "x"}]},
                   USER, {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "42"},
                   {"role": "user", "content": [{"type": "text", "text": "and?"},
                                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]),
    chat(tools=[{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}],
         tool_choice={"type": "function", "function": {"name": "lookup_order"}}),
    chat(response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}),
    chat(top_k=40, min_p=0.05),  # a backend's own parameters pass through to a direct call
])
def test_bodies_openai_accepts_are_accepted(body):
    validate_request(ChatCompletionRequest, body)


@pytest.mark.parametrize(("body", "param", "code"), [
    (chat(temperature=99), "temperature", "invalid_value"),
    (chat(temperature=-0.1), "temperature", "invalid_value"),
    (chat(temperature="0.5"), "temperature", "invalid_type"),
    (chat(top_p=1.5), "top_p", "invalid_value"),
    (chat(n=0), "n", "invalid_value"),
    (chat(max_tokens=0), "max_tokens", "invalid_value"),
    (chat(max_tokens=True), "max_tokens", "invalid_type"),
    (chat(max_completion_tokens=-5), "max_completion_tokens", "invalid_value"),
    (chat(presence_penalty=2.5), "presence_penalty", "invalid_value"),
    (chat(frequency_penalty=-3), "frequency_penalty", "invalid_value"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value"),
    (chat(stop=7), "stop", "invalid_type"),
    (chat(stream="yes"), "stream", "invalid_type"),
    (chat(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
    (chat(logit_bias={"50256": 101}), "logit_bias.50256", "invalid_value"),
    (chat(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools[0].function.name", "invalid_value"),
    (chat(tool_choice="sometimes"), "tool_choice", "invalid_value"),
    ({"messages": [USER]}, "model", "missing_required_parameter"),
    (chat(model=""), "model", "invalid_value"),
    (chat(messages=[]), "messages", "invalid_value"),
    (chat(messages="hi"), "messages", "invalid_type"),
    (chat(messages=[{"role": "user", "content": None}]), "messages[0].content", "invalid_type"),
    (chat(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter"),
    (chat(messages=[USER, {"role": "user", "content": 42}]), "messages[1].content", "invalid_type"),
    (chat(messages=[{"role": "robot", "content": "hi"}]), "messages[0].role", "invalid_value"),
    (chat(messages=[{"content": "hi"}]), "messages[0].role", "missing_required_parameter"),
    (chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text",
     "missing_required_parameter"),
    (chat(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}]), "messages[0].content[0].type",
     "invalid_value"),
    (chat(messages=[{"role": "user", "content": "hi", "colour": "red"}]), "messages[0].colour", "unknown_parameter"),
    (chat(messages=[{"role": "tool", "content": "42"}]), "messages[0].tool_call_id", "missing_required_parameter"),
    (chat(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content[0].type", "invalid_value"),
])
def test_bodies_openai_refuses_name_the_field(body, param, code):
    err = refused(ChatCompletionRequest, body)
    assert (err.param, err.code) == (param, code), err.message
    assert param.split("[")[0].split(".")[0] in err.message


def test_the_message_says_what_was_expected_and_what_came():
    err = refused(ChatCompletionRequest, chat(temperature=99))
    assert "less than or equal to 2" in err.message and "99" in err.message
    err = refused(ChatCompletionRequest, chat(messages=[{"role": "user", "content": None}]))
    assert "string" in err.message and "list" in err.message and "null" in err.message


def test_an_assistant_message_needs_content_or_tool_calls():
    err = refused(ChatCompletionRequest, chat(messages=[USER, {"role": "assistant", "content": None}]))
    assert err.param == "messages[1]" and "tool_calls" in err.message


def test_a_body_that_is_not_an_object_is_refused():
    assert refused(ChatCompletionRequest, [USER]).code == "invalid_type"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "all-minilm-l6-v2", "input": []}, "input"),
    ({"model": "all-minilm-l6-v2", "input": [1, 2, 3]}, "input[0]"),
    ({"model": "all-minilm-l6-v2", "input": ["a"] * 2049}, "input"),
    ({"model": "all-minilm-l6-v2", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "all-minilm-l6-v2", "input": "a", "dimensions": 0}, "dimensions"),
    ({"input": "a"}, "model"),
])
def test_embedding_bodies_are_validated(body, param):
    assert refused(EmbeddingRequest, body).param == param
    validate_request(EmbeddingRequest, {"model": "all-minilm-l6-v2", "input": ["a", "b"], "encoding_format": "base64"})


def test_feedback_bodies_are_validated():
    validate_request(FeedbackRequest, {"request_id": "req_1", "rating": -1})
    assert refused(FeedbackRequest, {"request_id": "req_1", "rating": 9}).param == "rating"
    assert refused(FeedbackRequest, {"request_id": "chatcmpl-1", "rating": 1}).param == "request_id"
    assert refused(FeedbackRequest, {"request_id": "req_1", "stars": 1}).param == "stars"
    assert "at least one" in refused(FeedbackRequest, {"request_id": "req_1"}).message


def test_the_published_schema_carries_the_validation_rules():
    schemas = openapi_schemas()
    chat_schema = schemas["ChatCompletionRequest"]
    assert chat_schema["required"] == ["model", "messages"]
    temperature = chat_schema["properties"]["temperature"]["anyOf"][0]
    assert (temperature["minimum"], temperature["maximum"]) == (0, 2)
    assert chat_schema["properties"]["messages"]["minItems"] == 1
    user = schemas["UserMessage"]
    assert "content" in user["required"]
    assert {"EmbeddingRequest", "FeedbackRequest", "ToolMessage", "TextPart"} <= set(schemas)


def test_validating_a_small_chat_body_costs_microseconds():
    body = chat(temperature=0.2, max_tokens=64, stream=True)
    for _ in range(200):
        validate_request(ChatCompletionRequest, body)
    t0 = time.perf_counter()
    for _ in range(2000):
        validate_request(ChatCompletionRequest, body)
    per_call_us = (time.perf_counter() - t0) / 2000 * 1e6
    assert per_call_us < 100, per_call_us  # measured ~10-20 us; the gateway adds ~590 us p50 in all
