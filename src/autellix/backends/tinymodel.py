"""Dummy-weight Llama model directories for running the real vLLM engine without downloads.

Why: this machine (and CI) cannot fetch weights, but vLLM's speed depends only on a model's
*shape*, not its weights. A `config.json` in a directory plus `load_format="dummy"` gives a real
engine with real timing: a tiny shape for fast tests, a "bench" shape whose batch step takes tens
of milliseconds on this 2-core CPU (so scheduling decisions matter at a visible scale), and the
real Llama-3.1-8B shape for GPU runs. By default there is no tokenizer (token-id prompts,
`skip_tokenizer_init=True`); `write_tokenizer` adds a small word-level one built offline with
`tokenizers` (plus a chat template that takes tools), so text and chat prompts, tool calls and
constrained decoding (structured output) can be tested without a download.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class LlamaShape:
    """The fields of a Llama config that decide compute and KV-cache size."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    torch_dtype: str = "bfloat16"
    rope_theta: float = 500000.0
    llama3_rope: bool = False  # Llama-3.1 long-context rope scaling

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def dtype_bytes(self) -> int:
        return 4 if self.torch_dtype == "float32" else 2

    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one token occupies (K and V, every layer, in the model's dtype)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


# Columns in LlamaShape's field order: hidden size, layers, attention heads, KV heads,
# intermediate (MLP) size, vocabulary, context length.
PRESETS: dict[str, LlamaShape] = {
    # Fast enough for unit tests: engine start-up is dominated by vLLM itself; a decode step is
    # ~5 ms alone. CPU presets are float32: this CPU has AVX2 but no AVX512-BF16, and vLLM's bf16
    # path measured 2-5x slower here (prefill of 1,024 tokens: 0.6 s bf16 vs 0.11 s fp32).
    "tiny": LlamaShape(256, 2, 4, 2, 768, 4096, 4096, torch_dtype="float32"),
    # Sized by measurement (bench/vllm_probe.py, float32 on the 2-core AVX2 CPU, vLLM's worker on
    # one core): a decode step takes ~11 ms alone, ~23 ms at batch 16, ~36 ms at batch 32, and a
    # 1,024-token prefill ~0.5 s. Scheduling effects show within minutes at this scale.
    "bench": LlamaShape(512, 4, 8, 2, 1536, 8192, 8192, torch_dtype="float32"),
    # The real Llama-3.1-8B shape (as published in its config.json), for GPU runs on dummy weights.
    "llama-8b": LlamaShape(4096, 32, 32, 8, 14336, 128256, 131072, llama3_rope=True),
}


def llama_config(shape: LlamaShape) -> dict[str, Any]:
    """A Hugging Face `config.json` for `LlamaForCausalLM` with this shape."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab_size,
        "max_position_embeddings": shape.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": shape.rope_theta,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": shape.torch_dtype,  # transformers < 5 reads this key
        "dtype": shape.torch_dtype,  # transformers >= 5 reads this one
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if shape.llama3_rope:
        config["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
        config["bos_token_id"] = 128000
        config["eos_token_id"] = [128001, 128008, 128009]
    return config


def make_tiny_llama(
    directory: str | Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    torch_dtype: str = "float32",
) -> Path:
    """Write a `config.json` for a dummy-weight Llama into `directory` and return its path.

    Load it with `AsyncEngineArgs(model=str(path), load_format="dummy", skip_tokenizer_init=True)`.
    """
    shape = LlamaShape(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        torch_dtype=torch_dtype,
    )
    return write_model_dir(directory, shape)


def write_model_dir(directory: str | Path, shape: LlamaShape) -> Path:
    """Write `config.json` (and a small provenance file) for `shape`; idempotent."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(llama_config(shape), indent=2) + "\n")
    (path / "autellix_shape.json").write_text(json.dumps(asdict(shape), indent=2) + "\n")
    return path


def make_preset(directory: str | Path, preset: str) -> Path:
    """Write the named preset ("tiny", "bench", "llama-8b") into `directory`."""
    try:
        shape = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}") from None
    return write_model_dir(directory, shape)


# Special tokens of the test tokenizer; ids 0-2 match the Llama config's bos/eos (1/2).
SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|developer|>",
    "<|end|>",
)  # fmt: skip
_COMMON_WORDS = (
    "the a an of to and in is it you that he was for on are with as i his they be at one have this "
    "from or had by hot word but what some we can out other were all there when up use your how "
    "said each she which do their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find hello world plan "
    "trip summarize search tool answer question agent program"
).split()
#: Tokens of tool calling in the Hermes/Qwen form (`<tool_call>{json}</tool_call>`): ordinary
#: (not special) tokens, so they survive detokenizing and the frontend's parser sees them.
TOOL_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<tools>",
    "</tools>",
)
#: The chat template, in the Hermes/Qwen style Hugging Face templates use: `tools` (OpenAI
#: function definitions) go in a system turn inside `<tools>`, an assistant's earlier calls are
#: rendered as `<tool_call>{"name": ..., "arguments": ...}</tool_call>`, and tool results as
#: `<tool_response>` turns. Without tools it renders `<|role|> content <|end|>` per message.
CHAT_TEMPLATE = (
    "{%- if tools %}<|system|> you may call tools . <tools> "
    "{% for t in tools %}{{ t | tojson }} {% endfor %}</tools> to call one answer "
    '<tool_call>{"name": name, "arguments": {...}}</tool_call> <|end|> {% endif %}'
    "{%- for m in messages %}"
    "{%- if m['role'] == 'assistant' and m['tool_calls'] %}<|assistant|> {{ m['content'] or '' }}"
    "{% for tc in m['tool_calls'] %}<tool_call>"
    "{\"name\": {{ tc['function']['name'] | tojson }}, \"arguments\": "
    "{{ tc['function']['arguments'] }}}</tool_call>{% endfor %} <|end|> "
    "{%- elif m['role'] == 'tool' %}<|tool|> <tool_response> {{ m['content'] }} "
    "</tool_response> <|end|> "
    "{%- else %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_tokenizer(directory: str | Path, vocab_size: int) -> Path:
    """Write a word-level `tokenizer.json` with exactly `vocab_size` ids, and its config.

    Why word-level: it is built in microseconds without training data or downloads, covers every
    id the model can emit (so every output detokenizes), and lowercase words, letters, digits and
    punctuation cover any text (an unknown word becomes `<unk>`). Not a real tokenizer: its only
    job is to let the engine's text and chat paths run for real in tests.
    """
    import string

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *string.ascii_lowercase, *string.digits, *string.punctuation):
        vocab.setdefault(tok, len(vocab))
    for word in (*_COMMON_WORDS, *TOOL_TOKENS):
        vocab.setdefault(word, len(vocab))
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the {len(vocab)} base tokens")
    filler = 0
    while len(vocab) < vocab_size:
        vocab.setdefault(f"w{filler}", len(vocab))
        filler += 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # words, then each punctuation character and digit on its own (so `{"a": 12}` is 8 tokens)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    # tokens are joined as they are, so the text is exactly what constrained decoding (which
    # sees each token's string) produced: JSON keys and values come back unchanged
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 1 << 20,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


def make_preset_with_tokenizer(directory: str | Path, preset: str) -> Path:
    """`make_preset` plus `write_tokenizer` sized to the preset's vocabulary."""
    path = make_preset(directory, preset)
    return write_tokenizer(path, PRESETS[preset].vocab_size)
