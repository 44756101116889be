"""Weight-only int8 for a causal LM's linear layers: 4x less memory to stream per token.

    swapped = quantize_linear_weights(model)   # in place; the number of layers swapped

On a CPU, generating a token reads every weight once, so decoding is bound by memory
bandwidth: int8 weights (one scale per output channel) make it faster without computing
in int8. Small matmuls (decode steps, up to SMALL_BATCH rows) run torch's
`_weight_int8pack_mm` with bfloat16 activations; larger ones (prefilling long or many
prompts) dequantize the weight and run float32, where that kernel is 1.4-2x slower.

Measured on 2 cores, AVX2, with tests/benchmarks/bench_autocomplete.py (served, one stream):
GPT-2 124M shape 54 tokens/s against 29 in float32, SmolLM2-135M 29 against 20; SmolLM2's
perplexity on Debian's fortunes 21.54 against 21.49, and the greedy completions checked were
unchanged. torchao's Int8WeightOnlyConfig (0.18) was 2x slower than float32 here: it feeds
the kernel float32 activations, its slow path (445 us against 80 us for a 576x1536 matmul).
"""

from __future__ import annotations

from typing import Any

import torch

SMALL_BATCH = 32  # rows up to which the int8 kernel beats dequantize + float32 (crossover: 32-48)


class Int8WeightLinear(torch.nn.Module):
    """y = x @ W.T + b with W stored as int8 rows times a per-row scale."""

    # Buffers (register_buffer below), declared so that they type as tensors.
    weight_int8: torch.Tensor
    scale: torch.Tensor
    scale_bf16: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float().contiguous()  # GPT-2 passes a transposed view
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("weight_int8", (weight / scale[:, None]).round().to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= SMALL_BATCH:
            out = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight_int8, self.scale_bf16).to(
                x.dtype
            )
        else:
            out = flat @ torch.mul(self.weight_int8, self.scale[:, None]).to(x.dtype).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def quantize_linear_weights(model: Any) -> int:
    """Swap every nn.Linear and GPT-2 Conv1D in `model` for an Int8WeightLinear; return how many."""
    from transformers.pytorch_utils import Conv1D

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, Int8WeightLinear(child.weight, child.bias))
            elif isinstance(child, Conv1D):  # GPT-2's layers: weight is (in, out)
                setattr(parent, name, Int8WeightLinear(child.weight.t(), child.bias))
            else:
                continue
            swapped += 1
    return swapped
