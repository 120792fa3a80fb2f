"""Give a plugin layer a stock layer's row in Ultralytics' ``parse_model``.

``parse_model`` decides how a YAML row's arguments become constructor arguments by set membership
(``m in base_modules``, ``m in frozenset({Detect, ...})``), an equality and hash test on the class. A class built with
``parsed_as(Conv)`` as its metaclass compares equal to ``Conv`` there, so its row gets a ``Conv`` row's treatment: the
input channels ``c1`` are prepended and ``c2`` follows the width multiple. Everywhere else it is its own class
(``isinstance``, pickling by module path, ``is`` tests).

Usage:
    >>> class SqueezeExcite(nn.Module, metaclass=parsed_as(Conv)):  # YAML: [-1, 1, SqueezeExcite, [64]]
    ...     def __init__(self, c1, c2, rd_ratio=1 / 16): ...
"""

from __future__ import annotations

from functools import cache

import torch.nn as nn


@cache
def parsed_as(stock: type) -> type:
    """A metaclass under which a class equals ``stock`` in ``parse_model``'s set tests (one per stock class)."""

    class ParsedAs(type(nn.Module)):
        def __eq__(cls, other):
            return cls is other or other is stock

        def __hash__(cls):
            return hash(stock)

    ParsedAs.__name__ = ParsedAs.__qualname__ = f"ParsedAs{stock.__name__}"
    return ParsedAs
