"""Autograd registration shared by the C++ and Triton projection ops (same schema, same backward)."""

from __future__ import annotations

import torch


def register_projection_autograd(op_name: str, backward_op) -> None:
    """Registers the backward of a ``project_volume_forward``-shaped op.

    The forward returns (out, aux); only ``out`` is differentiable. The backward op recomputes the
    samples from the inputs, so only the inputs, ``out`` and the per-pixel ``aux`` are saved:
    O(B * Ho * Wo) memory beyond the inputs.
    """

    def setup_context(ctx, inputs, output):
        density, features, rotation, *args = inputs
        out, aux = output
        ctx.mark_non_differentiable(aux)
        ctx.save_for_backward(density, features, rotation, out, aux)
        ctx.args = args

    def backward(ctx, grad_out, _grad_aux):
        density, features, rotation, out, aux = ctx.saved_tensors
        gd, gf, gr = backward_op(grad_out.contiguous(), out, aux, density, features, rotation, *ctx.args,
                                 ctx.needs_input_grad[2])
        return (gd, gf if features is not None else None, gr) + (None,) * len(ctx.args)

    torch.library.register_autograd(op_name, backward, setup_context=setup_context)
