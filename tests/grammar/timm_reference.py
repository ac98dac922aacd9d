"""Hand-written references of timm's EvoNorm2dB0 / B1 / S0 / S1 (timm is not installable here).

Written from timm's documented semantics (layers/evo_norm.py): parameter and buffer names,
defaults and the order of operations match, so a state_dict made here has timm's layout.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _float(x):
    # timm calls x.float(); keep float64 in float64 tests so references are exact
    return x if x.dtype == torch.float64 else x.float()


def instance_std(x, eps):
    return (
        _float(x)
        .var(dim=(2, 3), unbiased=False, keepdim=True)
        .add(eps)
        .sqrt()
        .to(x.dtype)
        .expand(x.shape)
    )


def instance_rms(x, eps):
    return (
        _float(x)
        .square()
        .mean(dim=(2, 3), keepdim=True)
        .add(eps)
        .sqrt()
        .to(x.dtype)
        .expand(x.shape)
    )


def group_std(x, groups, eps):
    b, c, h, w = x.shape
    xg = x.reshape(b, groups, c // groups, h, w)
    std = _float(xg).var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(eps).sqrt().to(x.dtype)
    return std.expand(xg.shape).reshape(b, c, h, w)


class RefEvoNorm2dB0(nn.Module):
    def __init__(self, num_features, apply_act=True, momentum=0.1, eps=1e-3, **_):
        super().__init__()
        self.apply_act, self.momentum, self.eps = apply_act, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        s = (1, -1, 1, 1)
        if self.v is not None:
            if self.training:
                var = _float(x).var(dim=(0, 2, 3), unbiased=False)
                n = x.numel() / x.shape[1]
                self.running_var.copy_(
                    self.running_var * (1 - self.momentum)
                    + var.detach() * self.momentum * (n / (n - 1))
                )
            else:
                var = self.running_var
            left = var.add(self.eps).sqrt().to(x.dtype).view(s).expand_as(x)
            right = x * self.v.to(x.dtype).view(s) + instance_std(_float(x), self.eps).to(x.dtype)
            x = x / left.max(right)
        return x * self.weight.to(x.dtype).view(s) + self.bias.to(x.dtype).view(s)


class RefEvoNorm2dB1(nn.Module):
    def __init__(self, num_features, apply_act=True, momentum=0.1, eps=1e-5, **_):
        super().__init__()
        self.apply_act, self.momentum, self.eps = apply_act, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        s = (1, -1, 1, 1)
        if self.apply_act:
            if self.training:
                var = _float(x).var(dim=(0, 2, 3), unbiased=False)
                n = x.numel() / x.shape[1]
                self.running_var.copy_(
                    self.running_var * (1 - self.momentum)
                    + var.detach() * self.momentum * (n / (n - 1))
                )
            else:
                var = self.running_var
            left = var.to(x.dtype).view(s).add(self.eps).sqrt()
            right = (x + 1) * instance_rms(_float(x), self.eps).to(x.dtype)
            x = x / left.max(right)
        return x * self.weight.view(s).to(x.dtype) + self.bias.view(s).to(x.dtype)


class RefEvoNorm2dS0(nn.Module):
    def __init__(self, num_features, groups=32, group_size=None, apply_act=True, eps=1e-5, **_):
        super().__init__()
        self.apply_act = apply_act
        self.groups = num_features // group_size if group_size else groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x):
        s = (1, -1, 1, 1)
        if self.v is not None:
            v = self.v.view(s).to(x.dtype)
            x = x * (x * v).sigmoid() / group_std(_float(x), self.groups, self.eps).to(x.dtype)
        return x * self.weight.view(s).to(x.dtype) + self.bias.view(s).to(x.dtype)


class RefEvoNorm2dS1(nn.Module):
    def __init__(self, num_features, groups=32, group_size=None, apply_act=True, eps=1e-5, **_):
        super().__init__()
        self.apply_act = apply_act
        self.groups = num_features // group_size if group_size else groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        s = (1, -1, 1, 1)
        if self.apply_act:
            x = nn.functional.silu(x) / group_std(_float(x), self.groups, self.eps).to(x.dtype)
        return x * self.weight.view(s).to(x.dtype) + self.bias.view(s).to(x.dtype)
