"""The autocompleter's HTTP shapes: OpenAI's completions API, plus `/v1/suggest`.

Requests are strict (a string where a number belongs is a 400, not a guess; an integer may
be written 4.0, as JSON Schema allows) and refuse unknown fields, so a typo in a parameter
name is reported instead of silently ignored.
`None` means "the default", as in OpenAI's API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.autocomplete.generation import ClientFinishReason
from services.core.json_numbers import JsonInt

Prompt = str | list[str] | list[JsonInt] | list[list[JsonInt]]
SEED_MAX = 2**64 - 1  # what a random generator's seed holds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _NamesModel(_Strict):
    """A request with a `model` name (suggest, feedback): text that is Unicode."""

    @field_validator("model", check_fields=False)
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        if value is not None:
            value.encode("utf-8")  # a lone surrogate: UnicodeEncodeError, a ValueError: a 400
        return value


class StreamOptions(_Strict):
    include_usage: bool = False


class CompletionRequest(_Strict):
    model: str | None = Field(None, examples=["smollm2-135m"])
    prompt: Prompt = Field(examples=["The capital of France is"])
    max_tokens: JsonInt | None = Field(None, ge=0, examples=[16])
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: JsonInt | None = Field(None, ge=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: JsonInt | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: JsonInt | None = Field(
        None, ge=0, le=SEED_MAX, description="Same seed, same request: same text (choice i uses seed + i)"
    )
    user: str | None = None  # accepted for compatibility; not used
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None,
        examples=[{"50256": -100}],
        description="Token id (as a string) -> bias added to its logit: -100 bans it, 100 forces it",
    )
    # Named so a client that sends them gets a 400 saying what to do instead (completions.py):
    suffix: str | None = Field(None, description="Not supported: no fill-in-the-middle")
    best_of: JsonInt | None = Field(None, ge=1, description="Only 1 or n: no server-side best-of ranking")
    # Beyond OpenAI's API (vLLM uses the same names):
    top_k: JsonInt | None = Field(None, ge=-1, description="Sample from the k likeliest tokens; 0 or -1: all")
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    truncate_prompt_tokens: JsonInt | None = Field(
        None, ge=1, description="Keep only the prompt's last N tokens instead of refusing a long prompt"
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_in_range(cls, value: object) -> object:
        """Named whole: pydantic's own message prints 2**64 - 1 as a float (...552000)."""
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= SEED_MAX:
            raise ValueError(f"seed must be in 0..{SEED_MAX} (64 bits)")
        return value

    @field_validator("prompt", "stop", "model", "user")
    @classmethod
    def _unicode(cls, value: Prompt | None) -> Prompt | None:
        """Text a tokenizer can take. pydantic checks a plain `str` field for lone surrogates
        ("\\ud800" is valid JSON, not Unicode) but not a str inside a union (500 TypeError)."""
        for text in [value] if isinstance(value, str) else value or []:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(
                        f"lone UTF-16 surrogate {text[exc.start]!r} at character "
                        f"{exc.start}: send valid Unicode (a surrogate only as half "
                        "of a pair)"
                    ) from None
        return value


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class Choice(BaseModel):
    text: str
    index: int
    logprobs: Logprobs | None = None
    finish_reason: ClientFinishReason | None = None  # "stop" or "length"


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens not run again: their KV came from the prefix cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails  # OpenAI's shape


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "modelport"
    root: str  # the exact model-store tag served


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SuggestRequest(_NamesModel):
    text: str = Field(min_length=1, examples=["The weather today is"])
    n: JsonInt = Field(3, ge=1, le=5, description="How many suggestions, at most")
    session: str | None = Field(
        None,
        max_length=200,
        examples=["editor-7f3a"],
        description="The editor asking: a newer request of the same session cancels this one "
        "(answered 409 superseded) while it still runs",
    )
    model: str | None = Field(
        None,
        max_length=200,
        examples=["smollm2-135m"],
        description="The base model or a user version (GET /v1/models lists them); "
        "omitted: the API key's default model, else the base",
    )


class SuggestFeedback(_NamesModel):
    """What the user did with suggestions since the editor's last report: the server counts it
    per user and model, so /metrics shows how much typing suggestions save each user."""

    typed: JsonInt = Field(ge=0, le=1_000_000, description="Characters typed by hand")
    accepted: JsonInt = Field(0, ge=0, le=1_000_000, description="Suggestions taken (each a keystroke: Tab)")
    accepted_chars: JsonInt = Field(
        0, ge=0, le=10_000_000, description="Characters those suggestions inserted"
    )
    model: str | None = Field(
        None,
        max_length=200,
        description="The model the suggestions came from, as asked in /v1/suggest (omitted: the "
        "API key's default model, else the base)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SuggestFeedback:
        if self.accepted_chars < self.accepted:
            raise ValueError(
                f"accepted_chars ({self.accepted_chars}) is less than accepted ({self.accepted}): "
                "each suggestion taken inserts at least one character"
            )
        return self


class FeedbackResponse(BaseModel):
    model: str
    keystrokes_saved: int  # accepted_chars - accepted: characters the user did not type


class Suggestion(BaseModel):
    text: str  # to append to the user's text as-is (it starts with a space when it should)
    # 0-1: the model's mean per-token probability for this continuation; for a user version's
    # recalled phrase (phrase_memory.py), the share of its context's occurrences it followed
    score: float


class SuggestResponse(BaseModel):
    model: str
    suggestions: list[Suggestion]  # best first; may be fewer than asked (duplicates removed)
    processing_time: float  # milliseconds


def document_served_model(app: Any, tag: str) -> None:
    """In `app`'s OpenAPI, `model` lists the names this server answers to, its model's name and
    full tag (another name is a 404 `model_not_found`, as OpenAI answers). User versions are
    per API key, so no static spec can list them: GET /v1/models does, and the field says so."""
    generate = app.openapi
    names = [tag.split(":")[0], tag]

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached: changed once, the same each time after
        for request in ("CompletionRequest", "SuggestRequest", "SuggestFeedback"):
            model = schema["components"]["schemas"][request]["properties"]["model"]
            model["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}]
            model["examples"] = names[:1]
            model["description"] = (
                "The served model, or a user version of it your API key may use (GET /v1/models "
                "lists them; this list cannot); omitted: the key's default model, else the base"
            )
        return schema

    app.openapi = openapi
