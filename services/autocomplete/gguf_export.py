"""Transformers checkpoints written as GGUF files, so that llama.cpp serves them: GPT-2 and Llama
(SmolLM2, TinyLlama, Llama 2/3 shapes with a BPE tokenizer), the architectures a fine-tuned
version comes in.

    model = write_gguf(model_dir, target)  # weight matrices as Q8_0, the rest float32
    check_gguf(model_dir, target, model)   # llama.cpp's next-token logits against torch's

llama.cpp's own converter (convert_hf_to_gguf.py) is a script in its source tree and comes
with no wheel. This is its GPT-2 and Llama paths on gguf-py (the `gguf` package that ships
with it): its tensor names (gguf's TensorNameMap); GPT-2's Conv1D weights transposed to
(out, in); Llama's q/k rows permuted to llama.cpp's rotary layout; the output matrix written
out when tied to the token embeddings; the byte-level BPE vocabulary with merges. Q8_0 keeps
the outputs (check_gguf measures it) and lets llama.cpp decode many sequences at once fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHITECTURES = ("gpt2", "llama")  # config.json model_type values written as GGUF
# Conv1D weights are stored (in, out); GGUF wants (out, in) like nn.Linear.
_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# Causal masks and rotary caches (buffers, not weights); the output matrix when it is tied.
_SKIP = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
# Prompts for the logit check: prose, code, a letter, digits.
CHECK_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n <",
    "Dear Sir or Madam, I am",
    "In 1969, 3 astronauts flew to the",
)


def write_gguf(model_dir: Path, target: Path) -> Any:
    """Write the transformers model in `model_dir` to `target`; ValueError if llama.cpp cannot
    run it as written here (another architecture, rotary scaling, an unknown pre-tokenizer).
    Returns the model as loaded (float32), for `check_gguf`."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((model_dir / "config.json").read_text())
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise ValueError(f"model_type {kind!r}: GGUF is written for {', '.join(ARCHITECTURES)}")
    arch = gguf.MODEL_ARCH.GPT2 if kind == "gpt2" else gguf.MODEL_ARCH.LLAMA
    pre = _pre_tokenizer(model_dir, kind)  # before the weights load: fail fast
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    writer = gguf.GGUFWriter(target, gguf.MODEL_ARCH_NAMES[arch])
    (_add_gpt2_params if kind == "gpt2" else _add_llama_params)(writer, config)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    n_layer = config.get("n_layer") or config["num_hidden_layers"]
    _add_vocab(writer, AutoTokenizer.from_pretrained(model_dir), model.config.vocab_size, model_dir, pre)

    names = gguf.get_tensor_name_map(arch, n_layer)
    tied = bool(getattr(model.config, "tie_word_embeddings", True))
    for name, tensor in model.state_dict().items():
        if name.endswith(_SKIP) or (tied and name == "lm_head.weight"):
            continue
        data = tensor.numpy()
        if name.endswith(_CONV1D):
            data = data.T
        if kind == "llama" and name.endswith(".self_attn.q_proj.weight"):
            data = _rotary_rows(data, config["num_attention_heads"])
        if kind == "llama" and name.endswith(".self_attn.k_proj.weight"):
            data = _rotary_rows(data, config.get("num_key_value_heads") or config["num_attention_heads"])
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{name}: not a {kind} tensor llama.cpp knows")
        _add_tensor(writer, gguf_name, data)
        if tied and gguf_name == "token_embd.weight":  # and again as the output matrix
            _add_tensor(writer, "output.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@dataclass(frozen=True)
class LogitCheck:
    """llama.cpp's next-token distributions for CHECK_PROMPTS against torch's (float32)."""

    kl_divergence: float  # mean over the prompts of KL(torch || llama.cpp), in nats
    max_error: float  # the largest absolute logit difference, over every prompt and token
    same_top_token: int  # prompts whose likeliest next token is the same in both
    prompts: int

    @property
    def passed(self) -> bool:
        # Q8_0 costs SmolLM2-135M a KL divergence of 0.009 (llama.cpp's own conversion of it:
        # the same, to the digit); its q/k rows left in transformers' layout cost 0.29 and
        # change the next token on 2 of 4 prompts.
        return self.kl_divergence < 0.1 and self.same_top_token >= self.prompts - 1

    def __str__(self) -> str:
        return (
            f"KL divergence {self.kl_divergence:.4f} nats, max logit error "
            f"{self.max_error:.2f}, same next token on {self.same_top_token}/{self.prompts} prompts"
        )


def check_gguf(model_dir: Path, gguf_file: Path, model: Any = None) -> LogitCheck:
    """`model`: the float32 transformers model of `model_dir`, if already loaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    backend = check_backend(gguf_file, tokenizer)
    try:

        def next_logits(ids: list[int]) -> Any:
            [got] = backend.prefill([ids], every_position=False)
            backend.abandon(0)
            return got[-1]

        return compare_next_token(model.eval(), tokenizer, next_logits)
    finally:
        backend.close()  # the import goes on in this process


def check_backend(gguf_file: Path, tokenizer: Any) -> Any:
    """A one-sequence llama.cpp backend on `gguf_file`, no prefix cache: for the checks."""
    import torch

    from services.autocomplete.llama_backend import LlamaCppBackend

    return LlamaCppBackend(
        gguf_file,
        tokenizer,
        threads=torch.get_num_threads(),
        kv_tokens=256,
        max_sequences=1,
        cached_sequences=0,
    )


def compare_next_token(model: Any, tokenizer: Any, llama_logits: Callable[[list[int]], Any]) -> LogitCheck:
    """torch's next-token logits (`model`, float32) against llama.cpp's (`llama_logits(ids)`, the
    last position's row) on CHECK_PROMPTS."""
    import torch

    divergences, errors, same = [], [], 0
    for prompt in CHECK_PROMPTS:
        ids = tokenizer(prompt).input_ids
        with torch.inference_mode():
            expected = model(torch.tensor([ids])).logits[0, -1]
        got = llama_logits(ids)[: expected.shape[0]]
        torch_logp, llama_logp = expected.log_softmax(-1), got.log_softmax(-1)
        divergences.append(float((torch_logp.exp() * (torch_logp - llama_logp)).sum()))
        errors.append(float((got - expected).abs().max()))
        same += int(got.argmax()) == int(expected.argmax())
    return LogitCheck(sum(divergences) / len(divergences), max(errors), same, len(CHECK_PROMPTS))


def _add_gpt2_params(writer: Any, config: dict[str, Any]) -> None:
    writer.add_block_count(config["n_layer"])
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])


def _add_llama_params(writer: Any, config: dict[str, Any]) -> None:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(
            f"rotary scaling {rope.get('rope_type') or rope.get('type')!r} is not written to GGUF here"
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ValueError("Llama with attention or MLP biases is not written to GGUF here")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:  # else llama.cpp derives them
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])


def _rotary_rows(weights: Any, heads: int) -> Any:
    """transformers rotates a head's two halves; llama.cpp (GGML_ROPE_TYPE_NORM) rotates
    interleaved pairs: reorder each head's rows to match, as convert_hf_to_gguf does."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tensor(writer: Any, name: str, data: Any) -> None:
    """Weight matrices as Q8_0 (blocks of 32 along a row); position embeddings, norms, biases
    and odd shapes stay float32 (they are small)."""
    import gguf
    import numpy as np

    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim == 2 and data.shape[1] % 32 == 0 and name != "position_embd.weight":
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)
    else:
        writer.add_tensor(name, data)


def _pre_tokenizer(model_dir: Path, kind: str) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE (tokenizer.json's
    pre_tokenizer). It only matters to other programs that run the GGUF: the service tokenises
    with the Hugging Face tokenizer itself."""
    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise ValueError(
            "GGUF is written for byte-level BPE tokenizers (tokenizer.json); "
            "a SentencePiece tokenizer.model is not converted here"
        )
    tokenizer = json.loads(path.read_text())
    if tokenizer.get("model", {}).get("type") != "BPE":
        raise ValueError("GGUF is written for byte-level BPE tokenizers only")
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [step.get("type") for step in steps]
    if types == ["ByteLevel"]:
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # GPT-2's split, digits one by one (SmolLM, SmolLM2)
    if types[:1] == ["Split"] and "\\p{N}{1,3}" in json.dumps(steps[0]):
        return "llama-bpe"  # Llama 3's split
    raise ValueError(f"pre-tokenizer {types} has no llama.cpp name known here")


def _add_vocab(writer: Any, tokenizer: Any, vocab_size: int, model_dir: Path, pre: str) -> None:
    """Byte-level BPE: tokens by id (padded to the model's vocab size), their types, the merges
    and the special token ids."""
    import gguf

    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(
                gguf.TokenType.NORMAL
                if i not in added
                else gguf.TokenType.CONTROL
                if added[i].special
                else gguf.TokenType.USER_DEFINED
            )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
