"""Exact per-example gradients of the trainable parameters, by hooks, without wrapping the model.

Every trainable parameter must belong to an ``nn.Linear`` (LoRA's ``lora_A``/``lora_B`` are plain
``nn.Linear`` layers in peft). For a linear layer y = x Wᵀ + b, example i's gradient is
``Σ_t g_{i,t} x_{i,t}ᵀ`` (and ``Σ_t g_{i,t}`` for the bias), with x the layer's input and g the
gradient of its output. The hooks capture x in the forward pass and g in the backward pass, so
whatever peft does around the layer — dropout before ``lora_A``, the scaling after ``lora_B`` — is
already in x and g and is never applied twice. Products and norms are computed in fp32 whatever
the training dtype.

Gradient checkpointing is supported: each forward call registers a gradient hook on *its own*
output tensor together with *its own* input, so a recomputed forward pass never double counts (the
hooks of the discarded pass never fire) and a module called twice accumulates both calls.
:func:`verify_against_autograd` checks, on a run's first chunk, that they add up to autograd's gradient.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from hf_dpsynth.errors import UnsupportedModelError

# Layers that mix examples in a batch: per-example gradients are meaningless through them.
_CROSS_EXAMPLE_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


@dataclass(frozen=True)
class TrainableParameter:
    name: str
    param: nn.Parameter
    module: nn.Linear
    kind: str  # "weight" or "bias"


def validate_model(model: nn.Module) -> list[TrainableParameter]:
    """Check that DP-SGD can be done exactly on ``model`` and list its trainable parameters.

    Refuses, with the reason, cross-example layers (batch norm), mixture-of-experts router losses,
    trainable parameters that are not owned by an ``nn.Linear``, and trainable parameters shared by
    several modules (tied weights), whose per-example norm would be miscounted.
    """
    for name, module in model.named_modules():
        if isinstance(module, _CROSS_EXAMPLE_LAYERS):
            raise UnsupportedModelError(
                f"Module {name!r} is a {type(module).__name__}, which mixes the examples of a batch: "
                "one example's gradient would depend on the others, and per-example clipping would not "
                "bound its influence. Replace it with a per-example normalisation (LayerNorm/GroupNorm)."
            )
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "output_router_logits", False):
        raise UnsupportedModelError(
            "The model adds a mixture-of-experts router auxiliary loss (config.output_router_logits=True), "
            "which is computed across the whole batch. Set config.output_router_logits=False for DP training."
        )
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((mod_name, module, p_name))
    trainable: list[TrainableParameter] = []
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if not param.requires_grad:
            continue
        if id(param) in seen or len(owners.get(id(param), ())) > 1:
            users = sorted({m for m, _, _ in owners[id(param)]})
            raise UnsupportedModelError(
                f"Trainable parameter {name!r} is shared by {len(users)} modules ({', '.join(users)}), e.g. tied "
                "input and output embeddings. Its per-example gradient is the sum over both uses, which this "
                "version does not compute; freeze it (LoRA never trains it) or untie the weights."
            )
        seen.add(id(param))
        _, module, p_name = owners[id(param)][0]
        if not isinstance(module, nn.Linear) or p_name not in ("weight", "bias"):
            raise UnsupportedModelError(
                f"Trainable parameter {name!r} belongs to a {type(module).__name__}, which has no exact "
                "per-example gradient path here (only nn.Linear layers, such as LoRA's lora_A/lora_B, are "
                "supported). Freeze it, or target only linear layers (e.g. LoraConfig(target_modules="
                "'all-linear') without modules_to_save, DoRA or embedding adapters)."
            )
        trainable.append(TrainableParameter(name=name, param=param, module=module, kind=p_name))
    if not trainable:
        raise UnsupportedModelError(
            "The model has no trainable parameters. Pass a peft_config (e.g. LoraConfig(r=16, "
            "target_modules='all-linear')) or a PeftModel with trainable adapters."
        )
    return trainable


class PerExampleGradients:
    """Hooks that compute per-example gradients of every trainable linear layer, in fp32.

    Use::

        engine = PerExampleGradients(validate_model(model))
        with engine.capture(batch_size=b):
            loss_sum.backward()   # the sum of per-example losses
        grads = engine.pop()      # {param: tensor of shape (b, *param.shape)}
    """

    def __init__(self, trainable: list[TrainableParameter]):
        self.trainable = trainable
        self._by_module: dict[nn.Module, list[TrainableParameter]] = {}
        for t in trainable:
            self._by_module.setdefault(t.module, []).append(t)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._active = False
        self._batch_size = 0
        self._grads: dict[nn.Parameter, torch.Tensor] = {}

    def attach(self) -> None:
        if self._handles:
            return
        for module in self._by_module:
            self._handles.append(module.register_forward_hook(self._on_forward))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def capture(self, *, batch_size: int) -> Iterator[None]:
        """Capture per-example gradients of forward/backward passes run inside this block."""
        if self._grads:
            raise RuntimeError("Per-example gradients of the previous chunk were not consumed (call pop()).")
        self._active, self._batch_size = True, batch_size
        try:
            yield
        finally:
            self._active = False

    def pop(self) -> dict[nn.Parameter, torch.Tensor]:
        """The per-example gradients captured so far (then forgotten, so none is used twice)."""
        grads, self._grads = self._grads, {}
        return grads

    def _on_forward(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not self._active or not torch.is_grad_enabled() or not output.requires_grad:
            return
        x = args[0]
        if x.shape[0] != self._batch_size or output.shape[0] != self._batch_size:
            raise UnsupportedModelError(
                f"A trainable linear layer saw a batch of {x.shape[0]} rows for a chunk of {self._batch_size} "
                "examples: the model reshapes the batch dimension (e.g. token routing), so per-example "
                "gradients cannot be computed by hooks. Target other layers with LoRA."
            )
        output.register_hook(partial(self._on_grad, module, x.detach()))

    def _on_grad(self, module: nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> None:
        # Products and norms in fp32 even when backward runs under autocast (docs/DP_CORRECTNESS.md row 14).
        with torch.autocast(device_type=grad_output.device.type, enabled=False):
            self._accumulate(module, x, grad_output)

    def _accumulate(self, module: nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> None:
        b = grad_output.shape[0]
        g = grad_output.reshape(b, -1, grad_output.shape[-1]).float()
        for t in self._by_module[module]:
            if t.kind == "weight":
                xf = x.reshape(b, -1, x.shape[-1]).float()
                gs = torch.einsum("bto,bti->boi", g, xf)
            else:
                gs = g.sum(dim=1)
            previous = self._grads.get(t.param)
            self._grads[t.param] = gs if previous is None else previous + gs


class ClippedSum:
    """Clip-and-accumulate, then add noise, then scale: one logical DP-SGD step, each its own method.

    Gradients are accumulated per privacy unit: a unit's examples are summed first (across chunks
    when a unit spans several), then the unit's gradient is clipped to ``per_example_max_grad_norm``
    as a whole and added to the running sum. Everything is fp32.
    """

    def __init__(self, params: list[nn.Parameter], *, per_example_max_grad_norm: float):
        self.params = params
        self.clip = float(per_example_max_grad_norm)
        self._sum: list[torch.Tensor] | None = None
        self._carry: dict[int, list[torch.Tensor]] = {}
        self._noised = False
        self.num_units = 0

    def reset(self) -> None:
        self._sum = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in self.params]
        self._carry.clear()
        self._noised = False
        self.num_units = 0

    def accumulate(
        self,
        per_example: dict[nn.Parameter, torch.Tensor],
        *,
        unit_slots: torch.Tensor,
        units: list[int],
        completes: list[bool],
    ) -> None:
        """Sum each unit's examples, clip every unit completed in this chunk, add to the running sum."""
        if self._sum is None or self._noised:
            raise RuntimeError("ClippedSum.accumulate called outside a step (reset() first, never after noise).")
        num_slots = len(units)
        per_unit: list[torch.Tensor] = []
        for p in self.params:
            g = per_example.get(p)
            if g is None:  # the parameter took no part in this chunk's loss: zero gradient
                g = torch.zeros((len(unit_slots), *p.shape), dtype=torch.float32, device=p.device)
            if num_slots != g.shape[0]:
                g = torch.zeros((num_slots, *p.shape), dtype=g.dtype, device=g.device).index_add_(
                    0, unit_slots.to(g.device), g
                )
            per_unit.append(g)
        for slot, unit in enumerate(units):
            carried = self._carry.pop(unit, None)
            if carried is not None:
                for g, c in zip(per_unit, carried):
                    g[slot] += c
        done = [s for s, c in enumerate(completes) if c]
        for slot, (unit, complete) in enumerate(zip(units, completes)):
            if not complete:
                self._carry[unit] = [g[slot].clone() for g in per_unit]
        if not done:
            return
        idx = torch.tensor(done, device=per_unit[0].device)
        sq = torch.zeros(len(done), dtype=torch.float32, device=per_unit[0].device)
        for g in per_unit:
            sq += g.index_select(0, idx).reshape(len(done), -1).pow(2).sum(dim=1)
        factor = (self.clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for total, g in zip(self._sum, per_unit):
            total += torch.einsum("u,u...->...", factor, g.index_select(0, idx))
        self.num_units += len(done)

    def add_noise(self, *, noise_multiplier: float, generator: torch.Generator | None) -> None:
        """Add N(0, σ²C²) to every coordinate of the clipped sum, once per logical step.

        Pass ``generator=None`` on every rank but one: the noise is added once across all ranks.
        """
        if self._sum is None or self._noised:
            raise RuntimeError("Noise must be added exactly once per step, after accumulation.")
        if self._carry:
            raise RuntimeError("A privacy unit's gradient was never completed and clipped in this step.")
        self._noised = True
        if generator is None or noise_multiplier == 0:
            return
        std = noise_multiplier * self.clip
        for total in self._sum:
            noise = torch.randn(total.shape, generator=generator, dtype=torch.float32, device=generator.device)
            total += std * noise.to(total.device)

    def finish(self, *, expected_batch_size: float, all_reduce=None) -> list[torch.Tensor]:
        """Reduce the noisy sum across ranks (once) and divide by the expected batch size q·N."""
        if self._sum is None or not self._noised:
            raise RuntimeError("finish() needs a noised sum (add_noise on every rank first).")
        if all_reduce is not None:
            flat = torch.cat([t.reshape(-1) for t in self._sum])
            flat = all_reduce(flat)
            out, offset = [], 0
            for t in self._sum:
                out.append(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()
        else:
            out = self._sum
        self._sum = None
        return [t / expected_batch_size for t in out]


def verify_against_autograd(
    trainable: list[TrainableParameter], per_example: dict[nn.Parameter, torch.Tensor], *, low_precision: bool
) -> None:
    """Per-example gradients must add up to autograd's gradient (checked on a run's first chunk).

    Catches a trainable parameter with no per-example path (it would train on noise alone) and
    models whose batch is not the first dimension of every linear layer's input.
    """
    for t in trainable:
        reference = t.param.grad
        mine = per_example.get(t.param)
        if reference is None:
            continue
        reference = reference.float()
        if mine is None:
            error = math.inf if float(reference.abs().max()) > 0 else 0.0
        else:
            error = float((mine.sum(dim=0) - reference).norm() / (reference.norm() + 1e-12))
        if error > (5e-2 if low_precision else 1e-3):
            raise UnsupportedModelError(
                f"The per-example gradients of {t.name!r} do not add up to its gradient (relative error "
                f"{error:.2g}): the parameter is used in a way the hooks do not see (e.g. peft target_parameters, "
                "a functional call, or a batch dimension that is not first). Its clipping would be wrong; freeze it "
                "or target standard linear layers."
            )
