"""GPT-2 checkpoints (transformers) written as GGUF files, so that llama.cpp can serve them.

    write_gpt2_gguf(model_dir, target)   # weight matrices as Q8_0, the rest float32

llama.cpp's own converter (convert_hf_to_gguf.py) is a script in its source tree and comes
with no wheel. This is its GPT-2 path on gguf-py (the `gguf` package that ships with it):
its tensor names (gguf's TensorNameMap), GPT-2's Conv1D weights transposed to (out, in),
the output matrix written out (GPT-2 ties it to the token embeddings), and the GPT-2 BPE
vocabulary. Q8_0 keeps GPT-2's outputs (tests/unit/test_gguf_export.py compares the logits
with transformers') and lets llama.cpp decode many sequences at once with its fast matmuls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Conv1D weights are stored (in, out); GGUF wants (out, in) like nn.Linear.
_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
_SKIP = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # masks; the tied output matrix


def write_gpt2_gguf(model_dir: Path, target: Path) -> None:
    """Write the GPT-2 model in `model_dir` (a transformers directory) to `target`."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = model.config
    writer = gguf.GGUFWriter(target, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    writer.add_block_count(config.n_layer)
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    _add_vocab(writer, AutoTokenizer.from_pretrained(model_dir), config.vocab_size, model_dir)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
    for name, tensor in model.state_dict().items():
        if name.endswith(_SKIP):
            continue
        data = tensor.numpy()
        if name.endswith(_CONV1D):
            data = data.T
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{name}: not a GPT-2 tensor llama.cpp knows")
        _add_tensor(writer, gguf_name, data)
        if gguf_name == "token_embd.weight":  # and again as the output matrix (tied)
            _add_tensor(writer, "output.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


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


def _add_vocab(writer: Any, tokenizer: Any, vocab_size: int, model_dir: Path) -> None:
    """GPT-2's byte-level BPE: tokens by id (padded to the model's vocab size), their types,
    the merges and the special token ids."""
    import gguf

    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    special = {i for i, added in tokenizer.added_tokens_decoder.items() if added.special}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
