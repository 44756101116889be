"""User versions (LoRA adapters) made offline for the tests: peft adapters on a stored base,
with random B matrices (peft starts them at zero) so each version visibly changes the outputs.

    adapter = lora_adapter_dir(Path(base.path), tmp / "alice", seed=1)   # peft's save_pretrained
    tag = import_model("alice-notes", LocalFile(str(adapter)), kind="causal-lm-lora",
                       extra_metadata={"owner": "alice"}).tag
"""

from __future__ import annotations

from pathlib import Path


def lora_adapter_dir(base_dir: Path, target: Path, *, seed: int, rank: int = 8, spread: float = 2.0) -> Path:
    """A peft LoRA adapter (every linear layer, `rank`) of the transformers model in `base_dir`
    (a store entry's directory: peft records it as the base), B drawn from N(0, spread)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    transposed = any(type(m).__name__ == "Conv1D" for m in model.modules())  # GPT-2
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules="all-linear",
        fan_in_fan_out=transposed,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, spread)
    model.save_pretrained(target)
    return target
