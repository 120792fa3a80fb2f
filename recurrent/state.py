"""The recurrent-state protocol shared by stateful layers.

A stateful layer keeps one ``(h, c)`` pair per stage as a *plain attribute*: not a parameter, not a buffer, so
``state_dict()``, checkpoints and EMA never see it. The rules:

* ``reset(mask=None)``: ``None`` clears everything; a bool mask of length B zeroes only those batch rows.
* Implicit reset: the stored state is dropped when the next input has another batch size, spatial shape, device
  or dtype.
* The stored state is always detached: gradients flow through the T steps of one forward, never across forwards
  (truncated BPTT of length T). Use the functional ``forward_with_states`` to keep a graph across calls.
* ``__getstate__`` drops the state, so ``copy.deepcopy`` (EMA), ``pickle`` and ``torch.save(module)`` never
  carry it and a copy starts with its own, empty state.
* The state is at least float32, also under autocast.
* Banks: one model may stream several independent sets of slots (e.g. one per input resolution in multi-resolution
  training): inside ``with state_bank(model, name):`` its layers hold bank ``name``'s state, outside it the default
  bank's. Each bank follows every rule above on its own; ``reset(None)`` outside any bank clears them all.

A layer describes its state with ``state_shapes(batch, height, width)``: one entry per ``(h, c)`` pair, either one
shape shared by h and c (an LSTM's) or a pair of shapes (a temporal attention's memory and its validity).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["RecurrentStateMixin", "LstmStates", "StateShape", "pair_shapes", "state_bank", "stateful_layers"]

LstmStates = list[tuple[torch.Tensor, torch.Tensor]]
StateShape = tuple[int, ...] | tuple[tuple[int, ...], tuple[int, ...]]
ResetMask = torch.Tensor | Sequence[bool]


def pair_shapes(shape: StateShape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of h and of c of one ``state_shapes`` entry (a shape shared by both, or a pair of shapes)."""
    if len(shape) == 2 and all(isinstance(s, (tuple, list)) for s in shape):
        return tuple(int(d) for d in shape[0]), tuple(int(d) for d in shape[1])
    shape = tuple(int(d) for d in shape)
    return shape, shape


class RecurrentStateMixin:
    """Mixin for an ``nn.Module`` that stores per-stage LSTM states between forwards.

    The host class calls :meth:`_init_recurrent_state` in ``__init__``, :meth:`_matching_states` before a forward
    and :meth:`_store_states` after it.
    """

    _recurrent_states: LstmStates | None = None
    _recurrent_input_dtype: torch.dtype | None = None
    _recurrent_banks: dict | None = None  # name -> (states, input dtype) of the banks not in use (see state_bank)

    def _init_recurrent_state(self) -> None:
        self._recurrent_states = None
        self._recurrent_input_dtype = None  # dtype of the input that produced the state; None: accept any

    @property
    def states(self) -> LstmStates | None:
        """The stored per-stage ``(h, c)`` tuples (``(B, C_s, H_s, W_s)`` each), or None when empty."""
        return self._recurrent_states

    @states.setter
    def states(self, states: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        self.set_states(states)

    def set_states(
        self,
        states: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
        input_dtype: torch.dtype | None = None,
    ) -> None:
        """Replace the stored state (e.g. by an export runner). ``input_dtype`` None accepts inputs of any dtype."""
        if states is None:
            self._init_recurrent_state()
            return
        self._recurrent_states = [(h.detach(), c.detach()) for h, c in states]
        self._recurrent_input_dtype = input_dtype

    def reset(self, mask: ResetMask | None = None) -> None:
        """Zero the state of the batch slots where ``mask`` is True; ``mask=None`` clears the whole state.

        A mask whose length differs from the stored batch size clears everything: the next forward has a new
        batch size and would reset implicitly anyway.
        """
        states = self._recurrent_states
        if mask is None:
            self._recurrent_banks = None
        if mask is None or states is None:
            self._init_recurrent_state()
            return
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.ndim != 1:
            raise TypeError(
                f"reset: mask must be a 1-D bool tensor or list of bools, got {mask.dtype} {tuple(mask.shape)}"
            )
        if mask.shape[0] != states[0][0].shape[0]:
            self._init_recurrent_state()
            return
        rows = mask.to(states[0][0].device).view(-1, 1, 1, 1)
        self._recurrent_states = [(h.masked_fill(rows, 0.0), c.masked_fill(rows, 0.0)) for h, c in states]

    def _matching_states(
        self,
        state_shapes: Sequence[StateShape],
        device: torch.device,
        input_dtype: torch.dtype,
    ) -> LstmStates | None:
        """The stored state if it fits an input (expected h/c shapes per pair, device, dtype), else reset to None."""
        states = self._recurrent_states
        if states is None:
            return None
        fits = (
            len(states) == len(state_shapes)
            and all((tuple(h.shape), tuple(c.shape)) == pair_shapes(s) for (h, c), s in zip(states, state_shapes))
            and all(h.device == device and c.device == device for h, c in states)
            and self._recurrent_input_dtype in (None, input_dtype)
        )
        if not fits:
            self._init_recurrent_state()
            return None
        # a state left by an inference_mode forward (e.g. a validation loop) cannot enter autograd as it is. Skipped
        # under torch.compile, where these two checks would split the graph: there ``reset(mask)``, which the trainer
        # calls before every batch, gives normal tensors (masked_fill outside inference_mode)
        compiling = torch.compiler.is_compiling()
        if not compiling and not torch.is_inference_mode_enabled() and states[0][0].is_inference():
            states = [(h.clone(), c.clone()) for h, c in states]
        return states

    def _store_states(self, states: LstmStates, input_dtype: torch.dtype) -> None:
        self._recurrent_states = [(h.detach(), c.detach()) for h, c in states]
        self._recurrent_input_dtype = input_dtype

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # nn.Module / object
        state = dict(state)
        state["_recurrent_states"] = None
        state["_recurrent_input_dtype"] = None
        state["_recurrent_banks"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_recurrent_state()


@contextmanager
def state_bank(module: torch.nn.Module, name: str) -> Iterator[None]:
    """Run ``module`` on another set of stream slots: inside, its stateful layers hold the state of bank ``name``
    (empty the first time), and the state they held before is back afterwards. ``reset(mask)`` inside applies to
    that bank's slots.

    Usage:
        >>> model.reset_states(batch["is_first"])  # the default bank: the batch's own slots
        >>> with state_bank(model, "twin"):  # the slots that read the second resolution
        ...     model.reset_states(batch["twin"]["is_first"])
        ...     preds = model(batch["twin"]["img"])
    """
    layers = stateful_layers(module)
    outer = [(m._recurrent_states, m._recurrent_input_dtype) for m in layers]
    for m in layers:
        banks = m._recurrent_banks or {}
        m._recurrent_states, m._recurrent_input_dtype = banks.pop(name, (None, None))
        m._recurrent_banks = banks
    try:
        yield
    finally:
        for m, (states, dtype) in zip(layers, outer):
            banks = m._recurrent_banks or {}
            banks[name] = (m._recurrent_states, m._recurrent_input_dtype)
            m._recurrent_banks = banks
            m._recurrent_states, m._recurrent_input_dtype = states, dtype


def stateful_layers(module: torch.nn.Module) -> list[RecurrentStateMixin]:
    """The modules inside ``module`` (itself included) that hold recurrent state, in ``modules()`` order."""
    return [m for m in module.modules() if isinstance(m, RecurrentStateMixin)]
