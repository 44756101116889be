"""Real GPT-2 from the Hugging Face hub: imported into the store, loaded, completing text.
Needs the internet (MODELPORT_NETWORK_TESTS=1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.autocomplete.causal_lm import load_causal_lm
from services.autocomplete.engine import Engine
from services.autocomplete.sampling import SamplingParams
from services.autocomplete.torch_backend import TorchBackend
from tests.autocomplete_fixtures import gpt2_tokenizer

pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_import_gpt2_from_the_hub_and_complete(tmp_path: Path) -> None:
    from services.core.model_store import import_model

    result = import_model("gpt2")
    engine = Engine(lambda: TorchBackend(*load_causal_lm(result.path, "float32")))
    text = "The quick brown fox jumps over the lazy dog."
    assert engine.encode(text) == gpt2_tokenizer(tmp_path)(text)["input_ids"]  # the test tokenizer is GPT-2's

    async def greedy() -> str:
        stream = engine.submit(
            [engine.encode("The Eiffel Tower is in the city of")],
            SamplingParams(max_tokens=4, temperature=0.0),
        )
        return "".join([delta.text async for delta in stream])

    assert asyncio.run(greedy()).strip().startswith("Paris")
