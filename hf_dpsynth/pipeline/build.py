"""A recipe's declarations turned into the library's objects: the codec, the model and tokenizer, the
LoRA configuration and the ``DPSynthConfig`` (one builder for the release's training and the audit's).

Privacy: none of these reads private data; the training arguments carry the recipe's public
hyper-parameters only (the run's N enters as the batch size it caps).
"""

from __future__ import annotations

from typing import Any

from hf_dpsynth.pipeline.recipe import Recipe

__all__ = ["load_recipe_model", "recipe_codec", "recipe_lora", "recipe_training_config"]

#: The projections LoRA adapts when ``lora.top_layers`` limits ``all-linear`` to the top layers.
_LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_recipe_model(recipe: Recipe) -> tuple[Any, Any]:
    """The model and tokenizer ``model.name`` names: ``default`` (the embedded default), ``tiny`` (a random
    tiny model for tests) or a Hub id / local folder."""
    from hf_dpsynth.models import load_model_and_tokenizer, tiny_causal_lm

    name = recipe.model.name
    if name == "tiny":
        return tiny_causal_lm()
    return load_model_and_tokenizer(None if name == "default" else name)


def recipe_lora(recipe: Recipe, model: Any) -> Any:
    """The ``peft.LoraConfig`` of the recipe's ``lora`` section for ``model``."""
    from peft import LoraConfig

    layers = model.config.num_hidden_layers
    top = recipe.lora.top_layers
    extra = {}
    if top:
        extra["layers_to_transform"] = list(range(max(0, layers - top), layers))
    target = recipe.lora.target_modules
    if target == "all-linear" and top:
        target = list(_LLAMA_LINEAR)
    return LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=0.0, target_modules=target, **extra)


def recipe_codec(recipe: Recipe) -> Any:
    """The codec of the recipe's public declarations (modality, columns, labels, schema, prompt template)."""
    from hf_dpsynth.data import ImageCodec, TabularCodec, TabularSchema, TextCodec
    from hf_dpsynth.data.sources import adult_schema

    d = recipe.data
    conditions = {d.label_column: list(d.labels)} if d.label_column and d.labels else None
    template = d.prompt_template
    described = {"descriptions": {d.label_column: dict(d.label_descriptions)}} if d.label_descriptions else {}
    if d.modality == "text":
        return TextCodec(d.text_column, conditions=conditions, prompt_template=template, **described)
    if d.modality == "tabular":
        schema = adult_schema() if d.schema == "adult" else TabularSchema.from_dict(d.schema)
        if d.drop_columns:
            schema = schema.select([n for n in schema.names if n not in d.drop_columns])
        return TabularCodec(schema, prompt_template=template)
    return ImageCodec(tuple(d.image_shape), int(d.image_levels), conditions=conditions, prompt_template=template,
                      **described)


def recipe_training_config(recipe: Recipe, *, output_dir: str, logical_batch_size: int, **settings: Any) -> Any:
    """The ``DPSynthConfig`` of ``recipe``'s training with ``logical_batch_size`` units per expected draw.

    ``settings`` are the caller's own (checkpointing, progress, σ, the user-level arguments of the
    prepared data); everything else is the recipe's ``training`` section.
    """
    import torch

    from hf_dpsynth.training import DPSynthConfig

    t = recipe.training
    return DPSynthConfig(
        output_dir=output_dir, per_example_max_grad_norm=t.per_example_max_grad_norm,
        logical_batch_size=logical_batch_size, per_device_train_batch_size=t.per_device_train_batch_size,
        max_steps=t.max_steps, learning_rate=t.learning_rate, max_length=t.max_length,
        activation_cache=t.activation_cache,
        use_cpu=not torch.cuda.is_available(), report_to="none", **settings,
    )
