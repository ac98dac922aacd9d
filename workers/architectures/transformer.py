"""A tiny pre-norm transformer encoder for sequences (and vectors, and images by rows).

Tokens: a vector ``(L,)`` is ``L`` tokens of one value, a sequence ``(C, L)`` is ``L`` tokens of
``C`` values, an image ``(C, H, W)`` is ``H`` row tokens of ``C*W`` values; each token is
linearly embedded and gets a learned position embedding. Blocks are pre-norm:
``x + attn(N1(x))`` then ``x + FFN(N2(x))`` with ``FFN = Linear(d, 4d) -> act -> Linear(4d, d)``;
the head is ``N(mean over tokens) -> Linear``.

- Activation campaigns: the FFN activation is the candidate; the norms are LayerNorm.
- Normact campaigns: the candidate replaces every norm position (N1, N2 and the final norm),
  applied to ``(N, d, L)`` (channels = embedding features, batch-like axes = batch and
  tokens); the FFN activation stays GELU. A normact candidate includes an activation, so the
  pre-norm branch inputs are normalized *and* activated; that is the point of the test.

Scale ``"cpu"``: d=32, 2 heads, 1 block; ``"gpu"``: d=128, 4 heads, 2 blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from layerforge.workers.architectures.common import LayerFactory, resolve_scale, width


def _tokens(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:  # (N, L) -> (N, L, 1)
        return x.unsqueeze(-1)
    if x.dim() == 3:  # (N, C, L) -> (N, L, C)
        return x.transpose(1, 2)
    n, c, h, w = x.shape  # rows as tokens
    return x.permute(0, 2, 1, 3).reshape(n, h, c * w)


def _token_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) == 1:
        return input_shape[0], 1
    if len(input_shape) == 2:
        return input_shape[1], input_shape[0]
    c, h, w = input_shape
    return h, c * w


class TokenNorm(nn.Module):
    """Norm position: LayerNorm over features, or a normact candidate on ``(N, d, L)``."""

    def __init__(self, d: int, kind: str, factory: LayerFactory):
        super().__init__()
        self.candidate = kind == "normact"
        self.layer = factory(d) if self.candidate else nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, L, d)
        if not self.candidate:
            return self.layer(x)
        return self.layer(x.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, kind: str, factory: LayerFactory):
        super().__init__()
        self.heads = heads
        self.n1 = TokenNorm(d, kind, factory)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.n2 = TokenNorm(d, kind, factory)
        self.fc1 = nn.Linear(d, 4 * d)
        self.act = factory(4 * d) if kind == "activation" else nn.GELU()
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(n, length, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.proj(a.transpose(1, 2).reshape(n, length, d))
        return x + self.fc2(self.act(self.fc1(self.n2(x))))


class Transformer(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        kind: str,
        factory: LayerFactory,
        scale: str | float = "cpu",
    ):
        super().__init__()
        small, mult = resolve_scale(scale)
        d, heads, depth = (32, 2, 1) if small else (width(128, mult, divisor=8), 4, 2)
        length, token_dim = _token_shape(tuple(input_shape))
        self.embed = nn.Linear(token_dim, d)
        self.pos = nn.Parameter(torch.randn(1, length, d) / math.sqrt(d))
        self.blocks = nn.Sequential(*[Block(d, heads, kind, factory) for _ in range(depth)])
        self.norm = TokenNorm(d, kind, factory)
        self.fc = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(_tokens(x)) + self.pos)
        return self.fc(self.norm(x).mean(dim=1))
