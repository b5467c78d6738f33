"""The naive patching loop: one full forward with hooks per patched variant.

Deliberately simple and independent of :mod:`lenslab.patching.run` (no batching, no suffix
reuse, no captured block arguments): the tests check the fast runners against it value for
value, and the benchmark measures the speed-up over it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from lenslab.models.adapter import ModelAdapter
from lenslab.patching.run import Patch


@torch.no_grad()
def clean_states(adapter: ModelAdapter, ids: Tensor) -> dict[str, list[Tensor]]:
    """Block outputs and attn/MLP outputs ([T, D] each, per block) of one clean run."""
    states: dict[str, list[Tensor]] = {"resid": [], "attn": [], "mlp": []}
    with contextlib.ExitStack() as stack:
        for i in range(adapter.n_layers):
            for kind, module in (
                ("resid", adapter.blocks[i]),
                ("attn", adapter.attn(i)),
                ("mlp", adapter.mlp(i)),
            ):
                keep = (lambda store: lambda out: store.append(_tokens(out, ids)[0].clone()))(
                    states[kind]
                )
                stack.enter_context(adapter.edit_output(module, keep))
        adapter.model(input_ids=ids[None], use_cache=False)
    return states


@torch.no_grad()
def naive_patch(
    adapter: ModelAdapter,
    clean: dict[str, list[Tensor]],
    corrupt_ids: Tensor,
    patch: Patch,
    noise: Tensor | None = None,
) -> Tensor:
    """Last-position logits [V] of the corrupted run with ``patch`` restored from ``clean``."""
    module_of = {"resid": adapter.blocks.__getitem__, "attn": adapter.attn, "mlp": adapter.mlp}
    pos = list(patch.positions)

    def restore(layer: int):
        def edit(out: Tensor) -> Tensor:
            new = _tokens(out, corrupt_ids).clone()
            new[0, pos] = clean[patch.kind][layer][pos]
            return new.reshape(out.shape)

        return edit

    with contextlib.ExitStack() as stack:
        if noise is not None:
            embed = adapter.model.get_input_embeddings()
            stack.enter_context(adapter.edit_output(embed, lambda out: out + noise))
        if pos:
            for layer in patch.layers:
                module = module_of[patch.kind](layer)
                stack.enter_context(adapter.edit_output(module, restore(layer)))
        logits = adapter.model(input_ids=corrupt_ids[None], use_cache=False).logits
    return logits[0, -1]


def _tokens(out: Tensor, ids: Tensor) -> Tensor:
    """A module output as [B, T, D] (OPT's fc2 returns tokens flattened to [B*T, D])."""
    return out.reshape(-1, len(ids), out.shape[-1])


@torch.no_grad()
def clean_head_inputs(adapter: ModelAdapter, ids: Tensor) -> dict[int, Tensor]:
    """{block: [T, H * width]}: the input of each attention output projection, clean run."""
    store: dict[int, Tensor] = {}
    handles = []
    for layer in range(adapter.n_layers):
        if adapter.mixer_kind(layer) != "attention":
            continue
        proj = adapter.head_split(layer)[0]

        def keep(_mod, args, layer=layer):
            store[layer] = _tokens(args[0], ids)[0].clone()

        handles.append(proj.register_forward_pre_hook(keep))
    try:
        adapter.model(input_ids=ids[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return store


@torch.no_grad()
def naive_head_patch(
    adapter: ModelAdapter,
    clean_z: dict[int, Tensor],
    corrupt_ids: Tensor,
    layer: int,
    position: int,
    head: int,
    noise: Tensor | None = None,
) -> Tensor:
    """Last-position logits [V] of the corrupted run with one head's output at one position
    restored: one full forward whose output projection at ``layer`` sees the clean slice."""
    proj, _, width = adapter.head_split(layer)
    cols = slice(head * width, (head + 1) * width)

    def edit(_mod, args):
        z = _tokens(args[0], corrupt_ids).clone()
        z[0, position, cols] = clean_z[layer][position, cols]
        return (z.reshape(args[0].shape), *args[1:])

    handles = [proj.register_forward_pre_hook(edit)]
    if noise is not None:
        embed = adapter.model.get_input_embeddings()
        handles.append(embed.register_forward_hook(lambda _m, _a, out: out + noise))
    try:
        logits = adapter.model(input_ids=corrupt_ids[None], use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits[0, -1]
