"""The one hook mechanism every mmie intervention uses.

An intervention edits the hidden state a transformer block outputs (the residual stream).
Block outputs are a tensor in recent transformers releases and a tuple whose first entry is
the hidden state in older ones and in some architectures; :class:`HookSet` handles both and
always returns a *new* output, never writing into the block's tensors.

:class:`BlockIntervention` is the base class of :class:`~mmie.SAEGate`,
:class:`~mmie.Scrubber` and :class:`~mmie.ReFTAdapter`: ``attach()``/``remove()`` are
idempotent, the object is a context manager that removes its hooks in ``finally``, and the
per-block tensors are placed on each block's own device when the intervention attaches.
Entering the ``with`` block of an intervention that is already attached is an
:class:`~mmie.InterventionError` (its exit would detach the outer block's hooks).

Several interventions compose; at the same block they apply in the order they were attached:

>>> with mmie.interventions(scrubber, gate):  # doctest: +SKIP
...     logits = model(**batch).logits       # scrub first, then gate
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import Self

from mmie.errors import InterventionError
from mmie.models.blocks import get_block

__all__ = [
    "BlockIntervention",
    "Edit",
    "HookSet",
    "assert_no_mmie_hooks",
    "detached",
    "interventions",
    "mmie_hooks",
    "remove_mmie_hooks",
]

logger = logging.getLogger(__name__)

Edit = Callable[[torch.Tensor], torch.Tensor]
"""An edit maps a block's hidden state ``[batch, seq, d_model]`` to a new one."""

_OWNER_ATTR = "_mmie_owner"
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
)


def _replace_hidden(output: Any, edit: Edit) -> Any:
    if isinstance(output, torch.Tensor):
        return edit(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (edit(output[0]), *output[1:])
    raise InterventionError(
        f"cannot edit a block output of type {type(output).__name__}; expected a tensor or "
        "a tuple whose first entry is the hidden state"
    )


class HookSet:
    """The forward hooks registered by one intervention, removed together.

    Args:
        owner: a name shown by :func:`mmie_hooks` (usually the intervention's class name).
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._handles: list[RemovableHandle] = []

    def __len__(self) -> int:
        return len(self._handles)

    def add_output_edit(self, module: nn.Module, edit: Edit) -> None:
        """Apply ``edit`` to the hidden state that ``module`` outputs.

        Args:
            module: the block (or any module whose output is a tensor, or a tuple whose
                first entry is the hidden state).
            edit: maps the hidden state ``[batch, seq, d_model]`` to the new one; must not
                modify its input in place.
        """

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            return _replace_hidden(output, edit)

        setattr(hook, _OWNER_ATTR, self.owner)
        self._handles.append(module.register_forward_hook(hook))

    def add_input_edit(self, module: nn.Module, edit: Edit) -> None:
        """Apply ``edit`` to the hidden state ``module`` receives (first positional argument
        or the ``hidden_states`` keyword)."""

        def pre_hook(
            _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if args and isinstance(args[0], torch.Tensor):
                return (edit(args[0]), *args[1:]), kwargs
            if isinstance(kwargs.get("hidden_states"), torch.Tensor):
                return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
            raise InterventionError(
                f"{type(_module).__name__} received no hidden-state tensor to edit"
            )

        setattr(pre_hook, _OWNER_ATTR, self.owner)
        self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))

    def add_observer(self, module: nn.Module, observe: Callable[[torch.Tensor], None]) -> None:
        """Call ``observe(hidden)`` on ``module``'s output hidden state without changing it."""

        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            hidden = output if isinstance(output, torch.Tensor) else output[0]
            observe(hidden)

        setattr(hook, _OWNER_ATTR, self.owner)
        self._handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        """Remove every hook of this set; calling it again does nothing."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()


def mmie_hooks(model: nn.Module) -> list[tuple[str, str]]:
    """The mmie hooks currently registered anywhere in ``model``.

    Returns:
        ``(module name, owner)`` pairs, e.g. ``("model.layers.3", "SAEGate")``.
    """
    found: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        for dict_name in _HOOK_DICTS:
            for fn in getattr(module, dict_name, {}).values():
                owner = getattr(fn, _OWNER_ATTR, None)
                if owner is not None:
                    found.append((name, owner))
    return found


def assert_no_mmie_hooks(model: nn.Module) -> None:
    """Raise :class:`~mmie.InterventionError` if any mmie hook is still on ``model``."""
    left = mmie_hooks(model)
    if left:
        listing = ", ".join(f"{owner} on {name or '<root>'}" for name, owner in left)
        raise InterventionError(f"{len(left)} mmie hook(s) still attached: {listing}")


def remove_mmie_hooks(model: nn.Module) -> int:
    """Forcefully remove every mmie hook from ``model``; returns how many were removed.

    A last resort for notebooks where an intervention object was lost while attached;
    normal code removes hooks through the intervention (or its ``with`` block).
    """
    removed = 0
    for module in model.modules():
        for dict_name in _HOOK_DICTS:
            hooks = getattr(module, dict_name, None)
            if not hooks:
                continue
            for key in [k for k, fn in hooks.items() if hasattr(fn, _OWNER_ATTR)]:
                del hooks[key]
                for extra in (
                    "_forward_hooks_with_kwargs",
                    "_forward_hooks_always_called",
                    "_forward_pre_hooks_with_kwargs",
                ):
                    getattr(module, extra, {}).pop(key, None)
                removed += 1
    return removed


class BlockIntervention:
    """Base class of interventions that edit the outputs of transformer blocks.

    Subclasses implement ``_build_edits``, called at attach time: that is where tensors
    are placed on each block's device (:func:`mmie.block_device`), so that the edit
    functions never move data. Optionally they override ``_on_remove`` to drop
    per-call state.

    Args:
        model: the model to edit (PEFT-wrapped models work).
        block_path: dotted path of the block list for architectures mmie does not know.
    """

    def __init__(self, model: nn.Module, *, block_path: str | None = None) -> None:
        self.model = model
        self.block_path = block_path
        self._hooks: HookSet | None = None

    def _build_edits(self) -> list[tuple[int, Edit]]:
        """Return ``(layer, edit)`` pairs; called once per :meth:`attach`."""
        raise NotImplementedError

    def _on_remove(self) -> None:
        """Drop state that must not outlive an attachment (override when needed)."""

    @property
    def attached(self) -> bool:
        """Whether the intervention's hooks are currently registered."""
        return self._hooks is not None

    def attach(self) -> Self:
        """Register the hooks (idempotent) and return ``self``.

        Raises:
            ValueError: a layer does not exist in the model.
        """
        if self._hooks is not None:
            return self
        hooks = HookSet(type(self).__name__)
        try:
            for layer, edit in self._build_edits():
                hooks.add_output_edit(get_block(self.model, layer, self.block_path), edit)
        except BaseException:
            hooks.remove()
            raise
        self._hooks = hooks
        logger.debug("%s attached (%d hooks)", type(self).__name__, len(hooks))
        return self

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        hooks, self._hooks = self._hooks, None
        try:
            if hooks is not None:
                hooks.remove()
        finally:
            self._on_remove()

    def __enter__(self) -> Self:
        """Attach for the ``with`` block.

        Raises:
            InterventionError: the intervention is already attached (a nested ``with`` on
                the same object, or ``with`` after :meth:`attach`): the inner block's exit
                would remove the hooks and leave the rest of the outer block unedited.
                Re-entry is an error rather than reference-counted, so that every ``with``
                block means "attached exactly here".
        """
        if self._hooks is not None:
            raise InterventionError(
                f"{type(self).__name__} is already attached; a nested `with` on the same "
                "intervention (or `with` after attach()) would detach it when the inner block "
                "exits. Use one `with` block, or attach()/remove() explicitly"
            )
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def interventions(*items: BlockIntervention) -> Iterator[tuple[BlockIntervention, ...]]:
    """Attach several interventions for the duration of a ``with`` block.

    They are attached in the given order, so at a block that several of them edit, the first
    one's edit applies first. On exit (also when the body raises) the interventions this
    call attached are removed; ones that were already attached stay attached.
    """
    newly: list[BlockIntervention] = []
    try:
        for item in items:
            if not item.attached:
                item.attach()
                newly.append(item)
        yield items
    finally:
        for item in reversed(newly):
            item.remove()


@contextlib.contextmanager
def detached(*items: BlockIntervention) -> Iterator[None]:
    """Temporarily remove attached interventions; re-attach them on exit (also on errors).

    Makes a hook-based arm its own reference without a second copy of the weights::

        kl = token_kl(model, lambda: detached(gate), tokenizer, texts)

    Interventions that were not attached are left alone. Re-attached interventions run after
    any other hook registered on the same block in the meantime.

    Args:
        *items: interventions (:class:`~mmie.BlockIntervention` subclasses).

    Yields:
        Nothing; inside the block the model runs without ``items``.
    """
    active = [item for item in items if item.attached]
    for item in active:
        item.remove()
    try:
        yield
    finally:
        for item in active:
            item.attach()
