"""Text autocompleter: a BentoML service with OpenAI's completions API and as-you-type suggestions.

    bentoml serve services.autocomplete.service:Autocomplete --port 3001
    curl localhost:3001/v1/completions -H 'content-type: application/json' \\
         -d '{"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}'
    curl localhost:3001/v1/suggest -H 'content-type: application/json' -d '{"text": "Dear Sir, I"}'

The model is a model-store entry (MODELPORT_AUTOCOMPLETE_MODEL, default the offline
SmolLM2-135M); one engine thread decodes all concurrent requests together. A request's
`model` (else its API key's default) may name a user version of it, a LoRA adapter loaded on
first use (user_versions.py, loaded_versions.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from services.autocomplete import completions, metrics
from services.autocomplete.causal_lm import GGUF_NAME
from services.autocomplete.http_schema import (
    Completion,
    CompletionRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    SuggestFeedback,
    SuggestRequest,
    SuggestResponse,
    document_served_model,
)
from services.autocomplete.model_kinds import CAUSAL_LM, choose_model
from services.autocomplete.settings import OFFLINE_DEFAULT_MODEL, Settings, tune_openmp
from services.autocomplete.user_versions import (
    Caller,
    Picked,
    phrases_of,
    pick,
    picks_base,
    usable_versions,
)
from services.core import api_errors, traffic
from services.core.admission import Limits
from services.core.api_errors import ApiError
from services.core.container_image import service_image

logger = logging.getLogger("modelport.autocomplete")
logger.setLevel(logging.INFO)  # BentoML leaves non-bentoml loggers at WARNING; the model line matters
settings = Settings.from_env()
LIMITS = Limits.of(settings)  # in flight, queued, queue wait: beyond them 429 + Retry-After
# BentoML packages the models a service declares into its bento, so the class body names the
# entry to serve: the one store lookup done at import.
MODEL_TAG = choose_model(settings)
app = FastAPI(
    title="modelport autocompleter",
    version="1",
    description="OpenAI-compatible text completions and as-you-type suggestions.",
)
api_errors.install(app)
document_served_model(app, MODEL_TAG)  # OpenAPI: `model` is one of the names served


@bentoml.service(
    name="autocomplete",
    # The engine enforces request_timeout_s itself (504); BentoML's limit is only a backstop.
    traffic=traffic.bentoml_traffic(LIMITS, longest_request_s=settings.request_timeout_s + 30),
    resources={"cpu": "2", "memory": "2Gi"},
    image=service_image("autocomplete"),  # + torch (CPU wheels unless MODELPORT_TORCH_INDEX="")
)
@bentoml.asgi_app(app, path="/v1")
class Autocomplete:
    language_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        tune_openmp()  # before the engine thread loads torch: libgomp reads it once
        from services.autocomplete.backends import load_backend
        from services.autocomplete.engine import Engine
        from services.autocomplete.loaded_versions import LoadedVersions
        from services.autocomplete.suggest import Sessions

        self.sessions = Sessions()
        self.engine = Engine(
            lambda: load_backend(Path(self.language_model.path), settings),
            max_batch_size=settings.max_batch_size,
            max_waiting_rows=settings.max_waiting_rows,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            observe_load=metrics.observe_load,
        )
        self.versions = LoadedVersions(
            self.engine, settings.adapter_budget_mb * 2**20, phrases=settings.phrase_memory
        )
        self.tag = str(self.language_model.tag)
        self.name = self.language_model.tag.name
        # A `finetune text --lora` version served as the model itself (`models serve TAG`, its
        # merged weights) keeps its phrase memory too.
        self.phrases = phrases_of(self.language_model) if settings.phrase_memory else None
        how_to_gpt2 = (
            ""
            if self.name != OFFLINE_DEFAULT_MODEL
            else " For GPT-2: `modelport models import gpt2` (needs the internet), then "
            "start with MODELPORT_AUTOCOMPLETE_MODEL=gpt2."
        )
        logger.info(
            "autocompleter serving model %s (%s, context %d tokens).%s",
            self.tag,
            self.engine.backend.description,
            self.engine.context_length,
            how_to_gpt2,
        )
        if (
            self.language_model.info.metadata.get("prepared_by", 1) < CAUSAL_LM.version
            and not (Path(self.language_model.path) / GGUF_NAME).exists()
        ):
            logger.warning(
                "%s was imported by an older modelport, which wrote no GGUF for "
                "llama.cpp: import it again (`modelport models import %s`, with its "
                "--from-... source if it is not a catalogue model) to serve it about "
                "4x faster",
                self.tag,
                self.name,
            )

    def __is_ready__(self) -> bool:
        return hasattr(self, "engine")

    @app.get("/models", response_model=ModelList, responses=api_errors.error_responses())
    async def models(self, request: Request) -> ModelList:
        """The base and the user versions of it the caller's key may use."""
        versions = await completions.in_worker_thread(usable_versions, self.language_model, _caller(request))
        return ModelList(
            data=[
                ModelCard(id=m.tag.name, created=int(m.info.creation_time.timestamp()), root=str(m.tag))
                for m in [self.language_model, *versions]
            ]
        )

    async def _pick(self, model: str | None, caller: Caller) -> Picked:
        """`pick`: at once for the base, in a worker thread when it looks in the model store."""
        if picks_base(model, caller, self.language_model):
            return pick(model, caller, self.language_model)
        return await completions.in_worker_thread(pick, model, caller, self.language_model)

    async def _acquire(self, picked: Picked) -> int | None:
        """The engine's id of the picked version, loaded if need be (None: the base)."""
        if picked.adapter is None:
            return None
        if not hasattr(self.engine.backend, "load_adapter"):
            raise ApiError(
                400,
                "user versions (LoRA adapters) are served by the llama.cpp backend; this server "
                "runs torch (MODELPORT_AUTOCOMPLETE_BACKEND)",
                code="versions_not_served",
                param="model",
            )
        return await self.versions.acquire(picked.tag, picked.adapter)

    def _release(self, picked: Picked) -> None:
        if picked.adapter is not None:
            self.versions.release(picked.tag)

    @app.post(
        "/completions",
        response_model=Completion,
        responses={
            200: {"content": {"text/event-stream": {}}},
            **api_errors.error_responses(400, 404, 413, 429),
        },
    )  # 404: unknown model (or another key's version); 400: a version of another base
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        picked = await self._pick(body.model, _caller(request))
        version = await self._acquire(picked)
        try:
            job = await completions.tokenising(
                completions.prompt_chars(body),
                completions.prepare,
                body,
                self.engine,
                settings,
                picked.name,
                frozenset({picked.name, picked.tag, body.model or picked.name}),
            )
            stream = self.engine.submit(
                job.prompts, job.params, n=job.n, timeout_s=settings.request_timeout_s, version=version
            )
        except BaseException:
            self._release(picked)
            raise
        if job.stream:

            async def events() -> Any:
                try:
                    async for event in completions.sse(job, stream, settings):
                        yield event
                finally:  # also when the client disconnects mid-stream
                    stream.cancel()
                    metrics.observe(stream.stats)
                    self._release(picked)

            return StreamingResponse(events(), media_type="text/event-stream")
        try:
            return await _unless_disconnected(request, completions.collect(job, stream, settings))
        finally:
            stream.cancel()
            metrics.observe(stream.stats)
            self._release(picked)

    @app.post(
        "/suggest",
        response_model=SuggestResponse,
        responses=api_errors.error_responses(400, 404, 409, 413, 429),
    )  # 409: superseded
    async def suggest(self, body: SuggestRequest, request: Request) -> SuggestResponse:
        from services.autocomplete.suggest import suggest

        started = time.perf_counter()
        picked = await self._pick(body.model, _caller(request))
        # Sessions are per caller: the same name under two API keys is two editors.
        session = (
            None if body.session is None else (f"{request.headers.get('authorization', '')}\0{body.session}")
        )
        version = await self._acquire(picked)
        try:
            found = await _unless_disconnected(
                request,
                suggest(
                    self.engine,
                    body.text,
                    n=body.n,
                    tokens=settings.suggest_tokens,
                    timeout_s=settings.request_timeout_s,
                    min_prob=settings.suggest_min_prob,
                    version=version,
                    phrases=self.phrases if version is None else self.versions.phrases(picked.tag),
                ),
                session=session,
                sessions=self.sessions,
            )
        finally:
            self._release(picked)
        return SuggestResponse(
            model=picked.name,
            suggestions=found,
            processing_time=round((time.perf_counter() - started) * 1000, 2),
        )

    @app.post(
        "/suggest/feedback",
        response_model=FeedbackResponse,
        responses=api_errors.error_responses(400, 404, 413),
    )
    async def suggest_feedback(self, body: SuggestFeedback, request: Request) -> FeedbackResponse:
        """What the user did with suggestions since the editor's last report (typed by hand,
        taken with Tab), counted on /metrics per user and model: how much typing they save."""
        caller = _caller(request)
        picked = await self._pick(body.model, caller)
        metrics.observe_feedback(caller.owner, picked.name, body.typed, body.accepted, body.accepted_chars)
        return FeedbackResponse(model=picked.name, keystrokes_saved=body.accepted_chars - body.accepted)


# Shutdown grace, API keys, bodies read whole (413 before a large one is parsed), admission.
traffic.install(
    Autocomplete,
    app,
    LIMITS,
    max_request_bytes=settings.max_request_bytes,
    uncounted=("/suggest/feedback",),  # a report of what the user did, not a call to bill
)


def _caller(request: Request) -> Caller:
    """The API key's owner and default model (an open API: no owner, every version open)."""
    key = getattr(request.state, "api_key", None)
    return Caller() if key is None else Caller(key.owner, key.model)


async def _unless_disconnected(
    request: Request, work: Any, *, session: str | None = None, sessions: Any = None
) -> Any:
    """Await `work`, cancelling it if the client goes away first (its rows leave the batch), or
    when a newer request of the same `session` starts (suggest.Sessions)."""

    async def run() -> Any:
        if sessions is not None:
            sessions.start(session)
        return await work

    task = asyncio.ensure_future(run())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            if task.cancelled() and sessions is not None and sessions.superseded(task):
                raise ApiError(
                    409, "a newer suggestion request of the same session replaced this one", code="superseded"
                )
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ApiError(499, "client closed the request", code="client_closed")
