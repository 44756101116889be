"""Autocompleter calls, mixed into the sync and async clients.

    with Client("http://localhost:3001") as client:
        print(client.complete("The capital of France is", max_tokens=8, temperature=0).text)
        for piece in client.stream_complete("Once upon a time", max_tokens=40):
            print(piece, end="", flush=True)
        for s in client.suggest("Thanks for your email, I"):
            print(f"{s.score:.2f} {s.text!r}")

Options are the server's (OpenAI's completions API): max_tokens, temperature, top_p, n,
stop, seed, logprobs, echo, top_k, repetition_penalty, truncate_prompt_tokens, ...
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from modelport_client._errors import ServerError, raise_for_status, translate

COMPLETIONS_PATH = "/v1/completions"
SUGGEST_PATH = "/v1/suggest"
FEEDBACK_PATH = "/v1/suggest/feedback"
MODELS_PATH = "/v1/models"


@dataclass(frozen=True)
class TokenLogprobs:
    tokens: tuple[str, ...]
    token_logprobs: tuple[float | None, ...]
    top_logprobs: tuple[dict[str, float] | None, ...]
    text_offset: tuple[int, ...]


@dataclass(frozen=True)
class CompletionChoice:
    text: str
    index: int
    finish_reason: str | None  # "stop" (end of text or a stop string) or "length"
    logprobs: TokenLogprobs | None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0  # prompt tokens the server took from its prefix cache

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        """Known fields only: a newer server may send more."""
        details = data.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            total_tokens=data["total_tokens"],
            cached_tokens=details.get("cached_tokens", 0),
        )


@dataclass(frozen=True)
class Completion:
    id: str
    model: str  # the model that actually answered
    choices: tuple[CompletionChoice, ...]
    usage: Usage

    @property
    def text(self) -> str:
        """The first choice's text (the only one unless you asked for n > 1 or several prompts)."""
        return self.choices[0].text

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        choices = tuple(
            CompletionChoice(
                text=c["text"],
                index=c["index"],
                finish_reason=c.get("finish_reason"),
                logprobs=None
                if c.get("logprobs") is None
                else TokenLogprobs(**{k: tuple(v) for k, v in c["logprobs"].items()}),
            )
            for c in data["choices"]
        )
        return cls(id=data["id"], model=data["model"], choices=choices, usage=Usage.from_json(data["usage"]))


@dataclass(frozen=True)
class Suggestion:
    text: str  # append as-is to the text typed so far
    score: float  # 0-1, higher is likelier


def _completion_body(prompt: str | Sequence[str], options: dict[str, Any], stream: bool) -> dict[str, Any]:
    body = {"prompt": prompt if isinstance(prompt, str) else list(prompt), **options}
    if stream:
        body["stream"] = True
    return body


def _suggest_body(text: str, n: int, session: str | None, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, "n": n}
    if session is not None:
        body["session"] = session
    if model is not None:
        body["model"] = model
    return body


def _feedback_body(typed: int, accepted: int, accepted_chars: int, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"typed": typed, "accepted": accepted, "accepted_chars": accepted_chars}
    if model is not None:
        body["model"] = model
    return body


def _model_ids(data: dict[str, Any]) -> list[str]:
    return [card["id"] for card in data["data"]]


def _suggestions(data: dict[str, Any]) -> list[Suggestion]:
    return [Suggestion(text=s["text"], score=s["score"]) for s in data["suggestions"]]


def _stream_piece(line: str, url: str) -> str | None:
    """The text in one server-sent event line; None for [DONE]; raises on an error event."""
    payload = line[len("data:") :].strip()
    if payload == "[DONE]":
        return None
    data = json.loads(payload)
    if "error" in data:
        error = data["error"]
        raise ServerError(500, error.get("message", "stream failed"), url=url, code=error.get("code"))
    return "".join(choice["text"] for choice in data["choices"])


class AutocompleteCalls:
    """Mixed into `Client` (which provides `_http` and `_request`)."""

    _http: httpx.Client

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    def models(self) -> list[str]:
        """The models your API key may use: the base and its user versions (GET /v1/models)."""
        return _model_ids(self._request("GET", MODELS_PATH).json())

    def complete(self, prompt: str | Sequence[str], **options: Any) -> Completion:
        """Complete `prompt` (or each of several prompts); options as in OpenAI's API
        (`model="alice-notes"`: a user version; without it, your key's default model)."""
        response = self._request("POST", COMPLETIONS_PATH, json=_completion_body(prompt, options, False))
        return Completion.from_json(response.json())

    def stream_complete(self, prompt: str, **options: Any) -> Iterator[str]:
        """The completion of `prompt` as it is generated, piece by piece."""
        url = str(self._http.base_url.join(COMPLETIONS_PATH))
        try:
            with self._http.stream(
                "POST", COMPLETIONS_PATH, json=_completion_body(prompt, options, True)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for_status(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    piece = _stream_piece(line, url)
                    if piece is None:
                        return
                    if piece:
                        yield piece
        except httpx.TransportError as exc:
            raise translate(exc, url) from exc

    def suggest(
        self, text: str, *, n: int = 3, session: str | None = None, model: str | None = None
    ) -> list[Suggestion]:
        """Up to `n` (at most 5) short continuations of `text`, best first. With a `session`
        (your editor's id), a newer call of the same session makes this one raise Superseded.
        `model`: the user's version (`models()` lists them); None: the API key's default model."""
        body = _suggest_body(text, n, session, model)
        return _suggestions(self._request("POST", SUGGEST_PATH, json=body).json())

    def suggest_feedback(
        self, *, typed: int, accepted: int = 0, accepted_chars: int = 0, model: str | None = None
    ) -> int:
        """Report what the user did since the last report: characters `typed` by hand,
        suggestions `accepted` (Tab) and the `accepted_chars` they inserted. The server counts
        them per user and model on /metrics; returns the keystrokes saved (accepted_chars - accepted)."""
        body = _feedback_body(typed, accepted, accepted_chars, model)
        return int(self._request("POST", FEEDBACK_PATH, json=body).json()["keystrokes_saved"])


class AsyncAutocompleteCalls:
    """Mixed into `AsyncClient` (which provides `_http` and `_request`)."""

    _http: httpx.AsyncClient

    if TYPE_CHECKING:

        async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    async def models(self) -> list[str]:
        return _model_ids((await self._request("GET", MODELS_PATH)).json())

    async def complete(self, prompt: str | Sequence[str], **options: Any) -> Completion:
        response = await self._request(
            "POST", COMPLETIONS_PATH, json=_completion_body(prompt, options, False)
        )
        return Completion.from_json(response.json())

    async def stream_complete(self, prompt: str, **options: Any) -> AsyncIterator[str]:
        url = str(self._http.base_url.join(COMPLETIONS_PATH))
        try:
            async with self._http.stream(
                "POST", COMPLETIONS_PATH, json=_completion_body(prompt, options, True)
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_status(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    piece = _stream_piece(line, url)
                    if piece is None:
                        return
                    if piece:
                        yield piece
        except httpx.TransportError as exc:
            raise translate(exc, url) from exc

    async def suggest(
        self, text: str, *, n: int = 3, session: str | None = None, model: str | None = None
    ) -> list[Suggestion]:
        response = await self._request("POST", SUGGEST_PATH, json=_suggest_body(text, n, session, model))
        return _suggestions(response.json())

    async def suggest_feedback(
        self, *, typed: int, accepted: int = 0, accepted_chars: int = 0, model: str | None = None
    ) -> int:
        body = _feedback_body(typed, accepted, accepted_chars, model)
        return int((await self._request("POST", FEEDBACK_PATH, json=body)).json()["keystrokes_saved"])
