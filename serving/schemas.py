"""Request bodies of the gateway's OpenAI-compatible API as pydantic models: what a request is checked against
and what ``/openapi.json`` publishes, one definition for both.

The rules follow OpenAI's published API reference (types, ranges, required fields, content types by role), so a
body OpenAI would refuse with 400 is refused here with 400 too, with ``param`` naming the field the way OpenAI
does (``messages[0].content``, ``temperature``). Top-level parameters this gateway does not know are allowed:
a direct model call passes them to the backend (vLLM's ``top_k``, ``min_p``, ...), a use case ignores them.

The handlers keep working on the JSON dict they parsed; validation is a gate in front of them. Models are strict
(no "0.5" for a number, no ``1`` for a boolean), as OpenAI is. Validating a small chat body costs ~10-20 us.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_STRICT = ConfigDict(strict=True, extra="forbid")
_STRICT_OPEN = ConfigDict(strict=True, extra="allow")


# ------------------------------------------------------------------------------------------------ content parts


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = _STRICT
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = _STRICT
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(BaseModel):
    model_config = _STRICT
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(BaseModel):
    model_config = _STRICT
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(BaseModel):
    model_config = _STRICT
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(BaseModel):
    model_config = _STRICT
    type: Literal["file"]
    file: FileRef


class RefusalPart(BaseModel):
    model_config = _STRICT
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


# ------------------------------------------------------------------------------------------------ messages


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = _STRICT
    id: str
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    name: str | None = None


class DeveloperMessage(BaseModel):
    model_config = _STRICT
    role: Literal["developer"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    name: str | None = None


class UserMessage(BaseModel):
    model_config = _STRICT
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = None


class AssistantMessage(BaseModel):
    """``content`` may be null when the message carries ``tool_calls`` (or the deprecated ``function_call``)."""

    model_config = _STRICT
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    audio: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise ValueError("an assistant message needs 'content' unless it has 'tool_calls'")
        return self


class ToolMessage(BaseModel):
    model_config = _STRICT
    role: Literal["tool"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    tool_call_id: str


class FunctionMessage(BaseModel):
    """Deprecated by OpenAI in favour of ``tool`` messages, still accepted by its API."""

    model_config = _STRICT
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


# ------------------------------------------------------------------------------------------------ tools


class FunctionDefinition(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: FunctionDefinition


class CustomToolDefinition(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    format: dict[str, Any] | None = None


class CustomTool(BaseModel):
    model_config = _STRICT
    type: Literal["custom"]
    custom: CustomToolDefinition


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class NamedFunction(BaseModel):
    model_config = _STRICT
    name: str


class NamedToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# ------------------------------------------------------------------------------------------------ requests


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. ``model`` is a use case (RAG) or a registry model (direct call)."""

    model_config = _STRICT_OPEN
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            # OpenAI's own wording and rule: the options describe a stream, so without one they are a mistake.
            raise _FieldError("stream_options", "'stream_options' is only allowed when 'stream' is true")
        if self.top_logprobs is not None and not self.logprobs:
            raise _FieldError("top_logprobs", "'top_logprobs' needs 'logprobs' set to true")
        return self


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Token-id arrays (allowed by OpenAI) are refused: the embedder takes text."""

    model_config = _STRICT
    model: str = Field(min_length=1)
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: what a user thought of an answer, for a recent request of the key's team."""

    model_config = _STRICT
    request_id: str = Field(pattern=r"^req_", description="the x-request-id (or agenix.request_id) of the answer")
    rating: int | None = Field(default=None, ge=-1, le=5, description="1..5 stars, or -1 / 1 (thumbs down / up)")
    comment: str | None = Field(default=None, max_length=4000)
    escalated: bool | None = None
    answer_used: bool | None = None

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackRequest:
        if self.model_fields_set <= {"request_id"}:
            raise _FieldError(None, "feedback needs at least one of rating, comment, escalated, answer_used")
        return self


# ------------------------------------------------------------------------------------------------ errors


class _FieldError(ValueError):
    """A model-level rule about one named field: the error's ``param`` is that field, not the whole body."""

    def __init__(self, param: str | None, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


class RequestInvalid(Exception):
    """A body that breaks the schema: ``param`` in OpenAI's notation, a message and an OpenAI error code."""

    def __init__(self, message: str, param: str | None, code: str):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


# Every discriminator value of the unions above: pydantic puts the chosen value into an error's location
# (``messages.0.user.content``), which is not a field and is left out of ``param``.
_TAGS = frozenset({"system", "developer", "user", "assistant", "tool", "function", "text", "image_url",
                   "input_audio", "file", "refusal", "custom", "json_object", "json_schema"})
_TAGGED_FIELDS = frozenset({"messages", "content", "tools", "response_format"})
_TYPE_ERRORS = ("_type", "_parsing", "int_from_float", "model_attributes_type", "is_instance_of")


def _param(loc: tuple[Any, ...]) -> str:
    """``('messages', 0, 'user', 'content', 'str')`` -> ``messages[0].content``."""
    out = ""
    prev_field: str | None = None
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "none") or part[:1].isupper():
            pass  # a union member's label, e.g. 'list[...]' or 'NamedToolChoice'
        elif part in _TAGS and prev_field in _TAGGED_FIELDS and (isinstance(prev, int) or prev == prev_field):
            pass  # the discriminator value that picked the union member
        else:
            out += ("." if out else "") + part
            prev_field = part
        prev = part
    return out


def _code(error_type: str) -> str:
    if error_type == "missing":
        return "missing_required_parameter"
    if error_type == "extra_forbidden":
        return "unknown_parameter"
    if error_type.endswith(_TYPE_ERRORS) or error_type in ("union_tag_invalid", "union_tag_not_found"):
        return "invalid_type" if "tag" not in error_type else "invalid_value"
    return "invalid_value"


def describe(exc: ValidationError) -> RequestInvalid:
    """One OpenAI-shaped error for a failed validation: the most specific failing field (a union reports one
    error per member; the deepest location is the member the body meant), its alternatives joined."""
    errors = exc.errors(include_url=False)
    for e in errors:
        ctx_error = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            param = ctx_error.param
            return RequestInvalid(ctx_error.message, param, "invalid_value")
    params = [_param(tuple(e["loc"])) for e in errors]
    deepest = max(range(len(errors)), key=lambda i: params[i].count(".") + params[i].count("["))
    param = params[deepest]
    err = errors[deepest]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        field = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
        param = f"{param}.{field}" if param else field
        expected = (err.get("ctx") or {}).get("expected_tags", "")
        got = (err.get("ctx") or {}).get("tag")
        msg = f"Invalid value {got!r} for '{param}': expected one of {expected}" if got is not None else \
            f"Missing required parameter: '{param}'"
        return RequestInvalid(msg, param, "invalid_value" if got is not None else "missing_required_parameter")
    if err["type"] == "missing":
        return RequestInvalid(f"Missing required parameter: '{param}'", param, "missing_required_parameter")
    if err["type"] == "extra_forbidden":
        return RequestInvalid(f"Unrecognized request argument supplied: '{param}'", param, "unknown_parameter")
    here = [e for e, p in zip(errors, params, strict=True) if p == param]
    # A value of the right type that breaks a rule (a list of 5 stop strings) says more than "not a string".
    specific = [e for e in here if _code(e["type"]) != "invalid_type"]
    chosen = specific[:1] or here
    alternatives: list[str] = []
    for e in chosen:
        msg = e["msg"].removeprefix("Value error, ")
        msg = msg[0].lower() + msg[1:]
        if alternatives and msg.startswith("input should be "):
            msg = msg.removeprefix("input should be ")
        if msg not in alternatives:
            alternatives.append(msg)
    got = chosen[0].get("input")
    shown = "" if isinstance(got, dict | list) else ", got null" if got is None else f", got {got!r}"
    if len(shown) > 66:
        shown = shown[:63] + "..."
    message = f"Invalid '{param}': {' or '.join(alternatives)}{shown}" if param else f"Invalid body: {' or '.join(alternatives)}"
    return RequestInvalid(message, param or None, _code(chosen[0]["type"]))


def validate_request(model: type[BaseModel], body: Any) -> None:
    """Check a parsed JSON body against ``model``; raise ``RequestInvalid`` for the first problem."""
    if not isinstance(body, dict):
        raise RequestInvalid("The request body must be a JSON object", None, "invalid_type")
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise describe(exc) from None


def openapi_schemas() -> dict[str, Any]:
    """JSON schemas of the request models, with their nested definitions, for ``components.schemas``."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(m, "validation") for m in (ChatCompletionRequest, EmbeddingRequest, FeedbackRequest)],
        ref_template="#/components/schemas/{model}",
    )
    return top["$defs"]


__all__ = ["ChatCompletionRequest", "EmbeddingRequest", "FeedbackRequest", "RequestInvalid", "describe",
           "openapi_schemas", "validate_request"]
