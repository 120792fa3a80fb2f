"""BatchNorm settings: RVT's layers use PyTorch's defaults (eps 1e-5, momentum 0.1), Ultralytics' ``Conv`` sets
eps 1e-3 and momentum 0.03. A model YAML's ``batchnorm:`` entry and the RVT import apply RVT's."""

from __future__ import annotations

import torch.nn as nn

RVT_BATCHNORM = {"eps": 1e-5, "momentum": 0.1}


def set_batchnorm(module: nn.Module, eps: float = RVT_BATCHNORM["eps"], momentum: float = RVT_BATCHNORM["momentum"]):
    """Give every BatchNorm inside ``module`` these settings (default: RVT's)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps, m.momentum = float(eps), float(momentum)
