"""GPT-2, the decoder only, in nanoGPT's shape: the same parameters (names, shapes) and the
same arithmetic as Hugging Face's ``GPT2Model`` fed with ``inputs_embeds``, so the
checkpoints trained with it load unchanged, without importing ``transformers`` (about four
seconds of start-up on this machine) for sixty lines of model.

Blocks are pre-LayerNorm (eps 1e-5): x + attn(ln_1(x)), then x + mlp(ln_2(x)); causal
attention that also ignores padded keys; GELU in its tanh form ("gelu_new"); GPT-2's
``Conv1D`` layers keep their weights as (in, out). ``wte`` is kept only because the
checkpoints hold it: tokens arrive as embeddings. Incremental decoding passes the keys
and values of earlier positions back in (``cache``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Conv1D(nn.Module):
    """GPT-2's linear layer: y = x W + b with W of shape (in, out)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(
            *x.shape[:-1], -1
        )


class Attention(nn.Module):
    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = Conv1D(d, 3 * d)
        self.c_proj = Conv1D(d, d)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x, keep, past):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.resid_drop(self.c_proj(y)), (k, v)


class Block(nn.Module):
    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = Attention(d, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(d, 4 * d)
        self.mlp.c_proj = Conv1D(4 * d, d)
        self.mlp_drop = nn.Dropout(dropout)

    def forward(self, x, keep, past):
        a, kv = self.attn(self.ln_1(x), keep, past)
        x = x + a
        h = F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp_drop(self.mlp.c_proj(h)), kv


class GPT2(nn.Module):
    def __init__(self, d: int, n_layer: int, n_head: int, n_positions: int, dropout: float):
        super().__init__()
        self.wte = nn.Embedding(1, d)  # unused (inputs come as embeddings); in the checkpoints
        self.wpe = nn.Embedding(n_positions, d)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(d, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        for emb in (self.wte, self.wpe):
            nn.init.normal_(emb.weight, std=0.02)
        for block in self.h:  # GPT-2's scaled init of the residual projections
            for layer in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, cache: list | None = None):
        """embeds (B, T, d) of the new positions; mask (B, all positions so far), 1 where a
        key may be attended to; cache: the (k, v) of each layer for earlier positions.
        Returns the hidden states of the new positions and the extended cache."""
        t = embeds.shape[1]
        start = 0 if cache is None else cache[0][0].shape[2]
        pos = torch.arange(start, start + t, device=embeds.device)
        x = self.drop(embeds + self.wpe(pos))
        causal = torch.ones(t, start + t, dtype=torch.bool, device=embeds.device).tril(start)
        keep = causal[None, None] & mask[:, None, None, :].bool()
        new_cache = []
        for i, block in enumerate(self.h):
            x, kv = block(x, keep, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.ln_f(x), new_cache
