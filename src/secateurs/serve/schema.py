"""The request bodies as pydantic models, for the OpenAPI document only (GET /openapi.json).

The handlers read bodies with protocol.py, whose one-line errors name the field; these models
describe the same fields (types, neutral values, bounds) so that a client generator or an HTTP
fuzzer knows what to send. They are not used to validate.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..methods import method_names


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused (400)


class TextPart(_Closed):
    type: Literal["text"]
    text: str


class Message(_Closed):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]


class Secateurs(BaseModel):
    """extra_body {"secateurs": ...}: the method, the prompt id of the sampling key, and the method's
    options (as the CLI's flags, e.g. n, proposals, max_new_tokens)."""

    model_config = ConfigDict(extra="allow")
    method: Optional[Literal[tuple(method_names())]] = None  # type: ignore[valid-type]
    prompt_id: Optional[Union[str, int]] = None


class StreamOptions(_Closed):
    include_usage: bool = True


class _Common(_Closed):
    model: str = Field(description="The served model's id (GET /v1/models).")
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = Field(None, description="Only with stream=true.")
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = Field(None, description="Up to 4 non-empty strings.")
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    secateurs: Optional[Secateurs] = None
    # accepted for compatibility, no effect (README: "Fields accepted with no effect")
    user: Optional[str] = None
    metadata: Optional[dict[str, str]] = None
    service_tier: Optional[Literal["auto", "default"]] = None
    n: Optional[Literal[1]] = None
    logprobs: Optional[Literal[False]] = None
    presence_penalty: Optional[Literal[0]] = None
    frequency_penalty: Optional[Literal[0]] = None
    store: Optional[Literal[False]] = None


class ChatCompletionRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    top_logprobs: Optional[Literal[0]] = None
    parallel_tool_calls: Optional[bool] = None
    modalities: Optional[list[Literal["text"]]] = None
    tool_choice: Optional[Literal["none"]] = None


class CompletionRequest(_Common):
    prompt: Union[str, list[str]] = Field(description="One prompt (a list of one string is accepted).")
    echo: Optional[Literal[False]] = None
    suffix: Optional[Literal[""]] = None
    best_of: Optional[Literal[1]] = None


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's openapi_extra: its JSON body, referring to components/schemas (see add_schemas)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_schemas(document: dict[str, Any], served: str) -> dict[str, Any]:
    """The models' schemas (and those they use) in the document's components; `model` names the one
    model served."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChatCompletionRequest, CompletionRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schema["properties"]["model"]["enum"] = [served]
        schemas[model.__name__] = schema
    return document
