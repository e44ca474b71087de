"""Run only what DP-SGD trains: the frozen-prefix activation cache and the loss on target tokens.

With LoRA on decoder layers L..n−1 only, the hidden states entering layer L are a deterministic
function of one example alone (the frozen embedding and layers 0..L−1, run in eval mode and without
gradients). :class:`FastPath` computes them the first time an example is drawn, keeps them (in
memory, or in an owner-only file), and from then on runs only layers L..n−1, the final norm, and the
output head *on the positions that carry a loss*: a prompt token's logits (a 49,152-wide product and
softmax each, for SmolLM2) are never needed. Nothing else changes: the same per-example loss (mean
over the example's own target tokens, fp32), the same hooks on the same LoRA layers, the same
clipping and noise.

On each run's first chunk :meth:`FastPath.verify` compares the fast path's per-example losses with
the model's own forward pass (eval mode, no gradient); a model whose forward is not "decoder layers,
norm, head" (logit soft-capping, per-layer attention types, embedding scaling inside the decoder, …)
is refused, or under ``activation_cache="auto"`` trained on the plain path instead.

Privacy: the cache holds functions of the private training texts. It lives in this process's memory,
or (``activation_cache="disk"``) in an owner-only file (0600, in a 0700 folder
``output_dir/activation-cache-*``) that is unlinked as soon as it is mapped: it has no name on disk
while training runs and vanishes with the process however it ends (a hard kill included); the push
gate (:func:`hf_dpsynth.hub.gates.check_folder`) refuses such a folder all the same, and the cache is
never written into checkpoints. A model whose frozen layers use dropout in training mode is not
cached under ``"auto"`` (the cache would turn that dropout off). It changes no
example's gradient (the frozen layers are deterministic), so the DP-SGD analysis is untouched
(docs/DP_CORRECTNESS.md row 34).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hf_dpsynth.data.tokenize import IGNORE_INDEX, TokenizedExamples
from hf_dpsynth.errors import DPConfigError, UnsupportedModelError
from hf_dpsynth.training.batching import collate
from hf_dpsynth.training.grad_sample import TrainableParameter
from hf_dpsynth.training.loss import per_example_causal_lm_loss

__all__ = ["CACHE_FOLDER_PREFIX", "FastPath", "build_fast_path", "checked_fast_path", "close_fast_path", "fast_path_for"]

logger = logging.getLogger(__name__)

#: The name every on-disk activation cache folder starts with (the push gate refuses it).
CACHE_FOLDER_PREFIX = "activation-cache-"
_MODES = ("auto", "memory", "disk", "off")
# Config keys of forward passes that are not "decoder → norm → head" or whose layers differ in kind.
_UNSUPPORTED_CONFIG = ("final_logit_softcapping", "logit_scale", "sliding_window", "embedding_multiplier",
                       "logits_scaling", "output_multiplier_scale")


class _Parts:
    """The pieces of a decoder-only causal LM the fast path runs itself."""

    def __init__(self, decoder: nn.Module, layers: nn.ModuleList, head: nn.Linear):
        self.decoder, self.layers, self.head = decoder, layers, head


def _locate(model: nn.Module) -> _Parts | str:
    """The decoder, its layer list and the output head; or why the model has no such shape."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    for key in _UNSUPPORTED_CONFIG:
        if getattr(config, key, None) not in (None, 0, 1, 1.0, False):
            return f"its config sets {key}={getattr(config, key)!r} (the forward pass is not decoder → norm → head)"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and len(set(layer_types)) > 1:
        return f"its layers differ in kind (config.layer_types = {sorted(set(layer_types))})"
    try:
        decoder = base.get_decoder()
        head = base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return f"{type(base).__name__} has no get_decoder()/get_output_embeddings()"
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(decoder, "norm"):
        return f"its decoder ({type(decoder).__name__}) has no `layers` list and final `norm`"
    if not isinstance(head, nn.Linear):
        return f"its output head is a {type(head).__name__}, not a linear layer"
    return _Parts(decoder, layers, head)


def _prefix_dropout(parts: _Parts, boundary: int) -> str | None:
    """The dropout the frozen prefix would apply in training mode (which the cache turns off), if any."""
    config = getattr(parts.decoder, "config", None)
    for key in ("embedding_dropout", "embd_pdrop", "embed_dropout"):
        if getattr(config, key, 0) or 0:
            return f"embedding dropout ({key}={getattr(config, key)})"
    for key in ("attention_dropout", "attn_pdrop", "hidden_dropout", "resid_pdrop", "dropout"):
        value = getattr(config, key, 0)
        if isinstance(value, (int, float)) and value > 0:
            return f"dropout ({key}={value})"
    modules = [parts.decoder.embed_tokens] if hasattr(parts.decoder, "embed_tokens") else []
    for module in [*modules, *parts.layers[:boundary]]:
        if any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()):
            return "dropout layers"
    return None


def _boundary(parts: _Parts, trainable: Sequence[TrainableParameter]) -> int | str:
    """The index of the lowest decoder layer holding a trainable parameter; or why there is none to use."""
    layer_of = {id(p): i for i, layer in enumerate(parts.layers) for p in layer.parameters()}
    head = {id(p) for p in parts.head.parameters()}
    lowest = len(parts.layers)
    for t in trainable:
        if id(t.param) in head:
            return f"its output head is trained ({t.name}): its per-example gradient needs every position"
        if id(t.param) not in layer_of:
            return f"trainable parameter {t.name} is outside the decoder layers"
        lowest = min(lowest, layer_of[id(t.param)])
    return lowest


@contextlib.contextmanager
def _swapped(module: nn.Module, **children: nn.Module) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in children}
    try:
        for name, child in children.items():
            setattr(module, name, child)
        yield
    finally:
        for name, child in saved.items():
            setattr(module, name, child)


@contextlib.contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in flags:
            m.training = training


class _Store:
    """Each example's hidden states at the boundary, unpadded, in one flat (tokens × width) buffer."""

    def __init__(self, lengths: Sequence[int], *, folder: Path | None):
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
        self.filled = np.zeros(len(lengths), dtype=bool)
        self.folder = folder
        self._buffer: torch.Tensor | None = None

    def _allocate(self, like: torch.Tensor) -> torch.Tensor:
        shape = (int(self.offsets[-1]), like.shape[-1])
        if self.folder is None:
            return torch.empty(shape, dtype=like.dtype, device=like.device)  # pages are touched as rows fill
        path = self.folder / "hidden.bin"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        itemsize = torch.empty((), dtype=like.dtype).element_size()
        try:
            raw = np.memmap(path, dtype=np.dtype(f"i{itemsize}"), mode="r+", shape=shape)
        finally:
            # The mapping keeps the file alive; without a name it disappears with this process, however it ends.
            path.unlink(missing_ok=True)
            shutil.rmtree(self.folder, ignore_errors=True)
        return torch.from_numpy(raw).view(like.dtype)

    def missing(self, rows: Sequence[int]) -> list[int]:
        return [r for r in rows if not self.filled[r]]

    def put(self, rows: Sequence[int], hidden: torch.Tensor) -> None:
        if self._buffer is None:
            self._buffer = self._allocate(hidden)
        for i, r in enumerate(rows):
            start, stop = int(self.offsets[r]), int(self.offsets[r + 1])
            self._buffer[start:stop] = hidden[i, : stop - start].to(self._buffer.device, self._buffer.dtype)
            self.filled[r] = True

    def gather(self, rows: Sequence[int], length: int, device: torch.device) -> torch.Tensor:
        assert self._buffer is not None
        out = torch.zeros((len(rows), length, self._buffer.shape[1]), dtype=self._buffer.dtype, device=device)
        for i, r in enumerate(rows):
            start, stop = int(self.offsets[r]), int(self.offsets[r + 1])
            out[i, : stop - start] = self._buffer[start:stop].to(device)
        return out

    def close(self) -> None:
        self._buffer = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def target_positions_loss(head: nn.Linear, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`~hf_dpsynth.training.loss.per_example_causal_lm_loss` with the head applied only where a
    target is: each example's mean cross-entropy over its own target tokens, in fp32."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    rows, cols = mask.nonzero(as_tuple=True)
    logits = head(hidden[:, :-1][rows, cols]).float()
    token_loss = F.cross_entropy(logits, targets[rows, cols], reduction="none")
    total = torch.zeros(labels.shape[0], dtype=token_loss.dtype, device=token_loss.device).index_add(0, rows, token_loss)
    return total / mask.sum(dim=1).clamp(min=1)


class FastPath:
    """The per-example training loss of a chunk, computed from the cache and the target positions only.

    Args:
        parts: the model's decoder, layers and head.
        boundary: the first decoder layer that is run per step (the lowest adapted one); 0 caches nothing.
        examples: the tokenised training examples (rows index them).
        pad_token_id: the padding id of :func:`~hf_dpsynth.training.batching.collate`.
        folder: where an on-disk cache lives (None: in memory).
    """

    def __init__(self, parts: _Parts, boundary: int, examples: TokenizedExamples, *, pad_token_id: int,
                 folder: Path | None):
        self.parts = parts
        self.boundary = boundary
        self._examples = examples
        self._pad = pad_token_id
        self._top = nn.ModuleList(parts.layers[boundary:])
        self._bottom = nn.ModuleList(parts.layers[:boundary])
        self._store = _Store([len(ids) for ids in examples.input_ids], folder=folder) if boundary > 0 else None
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def caches(self) -> bool:
        return self._store is not None

    @property
    def folder(self) -> Path | None:
        return self._store.folder if self._store is not None else None

    def _prefix_hidden(self, rows: list[int], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The hidden states entering the boundary layer for ``rows`` (computing the missing ones)."""
        assert self._store is not None
        missing = self._store.missing(rows)
        self.cache_misses += len(missing)
        self.cache_hits += len(rows) - len(missing)
        if missing:
            device = inputs["input_ids"].device
            batch = {k: v.to(device) for k, v in collate(self._examples, missing, pad_token_id=self._pad).items()}
            decoder = self.parts.decoder  # all of it in eval mode: only the embedding and the frozen layers run
            with torch.no_grad(), _eval_mode([decoder]), _swapped(decoder, layers=self._bottom, norm=nn.Identity()):
                hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 position_ids=batch["position_ids"], use_cache=False).last_hidden_state
            self._store.put(missing, hidden)
        return self._store.gather(rows, inputs["input_ids"].shape[1], inputs["input_ids"].device)

    def per_example_loss(self, rows: list[int], inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Each example's loss, as the plain path computes it, running only the adapted layers."""
        decoder = self.parts.decoder
        common = {"attention_mask": inputs["attention_mask"], "position_ids": inputs["position_ids"], "use_cache": False}
        if self._store is None:
            hidden = decoder(input_ids=inputs["input_ids"], **common).last_hidden_state
        else:
            prefix = self._prefix_hidden(rows, inputs)
            with _swapped(decoder, layers=self._top):
                hidden = decoder(inputs_embeds=prefix, **common).last_hidden_state
        return target_positions_loss(self.parts.head, hidden, labels)

    def verify(self, model: nn.Module, rows: list[int], inputs: dict[str, torch.Tensor], labels: torch.Tensor,
               *, low_precision: bool) -> float:
        """The largest relative difference between the fast and the plain per-example losses (eval
        mode, no gradient); raises :class:`UnsupportedModelError` above the tolerance."""
        with torch.no_grad(), _eval_mode([model]):
            plain = per_example_causal_lm_loss(
                model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                      position_ids=inputs["position_ids"], use_cache=False).logits, labels)
            fast = self.per_example_loss(rows, inputs, labels)
        error = float(((fast - plain).abs() / plain.abs().clamp(min=1e-6)).max()) if len(plain) else 0.0
        if not error <= (2e-2 if low_precision else 1e-4):
            raise UnsupportedModelError(
                f"The fast training path (cached frozen layers below layer {self.boundary}, loss on target tokens) "
                f"does not reproduce this model's forward pass: relative loss difference {error:.3g}. Its forward "
                "is not 'decoder layers → norm → head' (e.g. scaled embeddings or logits). Train it with "
                "DPSynthConfig(activation_cache='off')."
            )
        return error

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def build_fast_path(
    model: nn.Module,
    trainable: Sequence[TrainableParameter],
    examples: TokenizedExamples,
    *,
    mode: str,
    pad_token_id: int,
    output_dir: str,
    max_gib: float,
    bytes_per_value: int,
) -> FastPath | None:
    """The fast path ``mode`` asks for, or None (``"off"``, or ``"auto"`` on a model it does not fit).

    ``"memory"``/``"disk"`` refuse a model without the decoder shape (and ``"memory"`` a cache larger
    than ``max_gib``) with the reason; ``"auto"`` uses memory when it fits, else no cache, and the
    target-only loss whenever the model has the shape.
    """
    if mode not in _MODES:
        raise DPConfigError(f"activation_cache must be one of {', '.join(map(repr, _MODES))}; got {mode!r}.")
    if mode == "off":
        return None
    parts = _locate(model)
    boundary = _boundary(parts, trainable) if isinstance(parts, _Parts) else parts
    if isinstance(boundary, str):
        if mode == "auto":
            logger.info("Training on the plain forward pass: the fast path does not apply, since %s.", boundary)
            return None
        raise UnsupportedModelError(
            f"activation_cache={mode!r} needs a decoder-only model trained inside its decoder layers, but {boundary}. "
            "Use activation_cache='off'."
        )
    assert isinstance(parts, _Parts)
    width = int(parts.head.in_features)
    size_gib = sum(len(ids) for ids in examples.input_ids) * width * bytes_per_value / 2**30  # never logged: N·tokens
    dropout = _prefix_dropout(parts, boundary)
    if boundary > 0 and dropout is not None:
        if mode != "auto" and dropout.startswith("embedding"):
            raise UnsupportedModelError(f"activation_cache={mode!r}: the model applies {dropout} to the decoder's input, "
                                        "which would fall on the cached states again. Use activation_cache='off'.")
        if mode == "auto":  # the plain path would train with that dropout: 'auto' never changes what is trained
            logger.info("No activation cache: the frozen layers use %s, which the cache would turn off.", dropout)
            boundary = 0
    if boundary > 0 and mode in ("auto", "memory") and size_gib > max_gib:
        if mode == "memory":
            raise DPConfigError(
                f"The activation cache (every training token × {width} values) would exceed "
                f"activation_cache_max_gib={max_gib:g}. Raise the limit, use activation_cache='disk', or 'off'."
            )
        logger.info("No activation cache: it would exceed activation_cache_max_gib = %g.", max_gib)
        boundary = 0
    folder = None
    if boundary > 0 and mode == "disk":
        os.makedirs(output_dir, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=CACHE_FOLDER_PREFIX, dir=output_dir))  # mode 0700
    if boundary > 0:
        logger.info("Activation cache (%s): layers 0-%d run once per example; layers %d-%d per step.",
                    "disk" if folder else "memory", boundary - 1, boundary, len(parts.layers) - 1)
    return FastPath(parts, boundary, examples, pad_token_id=pad_token_id, folder=folder)


def fast_path_for(args: Any, model: nn.Module, trainable: Sequence[TrainableParameter], examples: TokenizedExamples,
                  *, pad_token_id: int) -> FastPath | None:
    """The fast path a ``DPSynthConfig`` asks for (``activation_cache``, ``activation_cache_max_gib``)."""
    # Under autocast the cached states may stay fp32: the size is estimated at 4 bytes a value then.
    size = 4 if args.bf16 else torch.empty((), dtype=trainable[0].param.dtype).element_size()
    return build_fast_path(model, trainable, examples, mode=args.activation_cache, pad_token_id=pad_token_id,
                           output_dir=args.output_dir, max_gib=args.activation_cache_max_gib, bytes_per_value=size)


def checked_fast_path(fast: FastPath, model: nn.Module, rows: list[int], inputs: dict[str, torch.Tensor],
                      args: Any) -> FastPath | None:
    """``fast`` once :meth:`FastPath.verify` passed on a run's first chunk; under ``activation_cache='auto'``
    a model it does not reproduce is trained on the plain path instead (None, the cache deleted)."""
    batch = {k: v.to(args.device) for k, v in inputs.items()}
    try:
        fast.verify(model, rows, batch, batch["labels"], low_precision=args.bf16)
    except UnsupportedModelError as error:
        if args.activation_cache != "auto":
            close_fast_path(fast)
            raise
        logger.warning("Training on the plain forward pass (activation_cache='auto'): %s", error)
        return close_fast_path(fast)
    return fast


def close_fast_path(fast: FastPath | None) -> None:
    """Forget an activation cache (private): free the memory, delete an on-disk cache folder."""
    if fast is not None:
        fast.close()
    return None
