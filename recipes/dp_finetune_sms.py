"""DP fine-tuning of a LoRA adapter on the SMS Spam Collection, from the command line.

Every DPSynthConfig / TrainingArguments field is a flag, as in the transformers examples:

    python recipes/dp_finetune_sms.py --output_dir out --target_epsilon 4 --logical_batch_size 256 \\
        --per_device_train_batch_size 16 --num_train_epochs 3 --learning_rate 5e-4
    torchrun --standalone --nproc_per_node 2 recipes/dp_finetune_sms.py --use_cpu ...   # 2 CPU processes
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/dp_finetune_sms.py ...

The label conditions a chat prompt and the loss covers only the message. Records: the train split
(4,459 messages) of the SMS Spam Collection carried by hf_dpsynth, or --num_records of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from peft import LoraConfig
from transformers import HfArgumentParser

from hf_dpsynth import DPSynthConfig, DPSynthTrainer
from hf_dpsynth.models import load_model_and_tokenizer, tiny_causal_lm
from hf_dpsynth.resources import load_sms_spam


@dataclass
class RecipeArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A Hub id or local path; default: the embedded SmolLM2-135M-Instruct; "
                                        "'tiny': a random tiny model (smoke runs)."})
    num_records: int | None = field(default=None, metadata={"help": "Use only this many training messages."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_top_layers: int | None = field(
        default=None, metadata={"help": "Put LoRA on the top K layers only (faster on CPU); default: all layers."})


LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prompt(tokenizer, label: str) -> str:
    kind = "spam" if label == "spam" else "personal (not spam)"
    messages = [{"role": "system", "content": "You write SMS text messages."},
                {"role": "user", "content": f"Write one short {kind} SMS text message."}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def main(argv: list[str] | None = None) -> DPSynthTrainer:
    recipe, args = HfArgumentParser((RecipeArguments, DPSynthConfig)).parse_args_into_dataclasses(args=argv)
    if recipe.model_name_or_path == "tiny":
        model, tokenizer = tiny_causal_lm()
    else:
        model, tokenizer = load_model_and_tokenizer(recipe.model_name_or_path)
    data = load_sms_spam("train")
    if recipe.num_records:
        data = data.shuffle(seed=0).select(range(recipe.num_records))
    data = data.map(lambda r: {"prompt": prompt(tokenizer, r["label"]), "completion": r["text"]},
                    remove_columns=data.column_names)
    layers = model.config.num_hidden_layers
    top = recipe.lora_top_layers
    lora = LoraConfig(r=recipe.lora_r, lora_alpha=2 * recipe.lora_r, lora_dropout=0.0, target_modules=LINEAR,
                      layers_to_transform=list(range(layers - top, layers)) if top else None)
    trainer = DPSynthTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    trainer.train()
    if args.process_index == 0:
        report = trainer.privacy_report()
        print(report)
        trainer.model.save_pretrained(os.path.join(args.output_dir, "adapter"))
        with open(os.path.join(args.output_dir, "privacy_report.json"), "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, default=str)
    return trainer


if __name__ == "__main__":
    main()
