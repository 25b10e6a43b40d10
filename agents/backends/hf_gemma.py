"""Gemma (or any causal LM) through Hugging Face transformers, batched, as a Beam ModelHandler.

The GPU backend for workers that hold the model themselves: a batch of turns
from different sessions becomes one left-padded ``generate`` call, so
RunInference's batching is the model's batching.

Where the weights come from (``model_path``):
- a directory or hub id that ``from_pretrained`` can read (a real Gemma 3
  checkpoint baked into the worker image or copied next to it; nothing is
  downloaded at run time unless the path is a hub id and the worker is online);
- ``random:<shape>``: random weights built from a config, with a byte-level
  tokenizer made in code. No weights can be downloaded where this project is
  built and tested, so benchmarks (``bench/model_throughput.py``) and tests use
  this: ``random:gemma-3-1b`` is Gemma 3 1B's architecture and size,
  ``random:tiny`` a two-layer toy that runs in a second on a CPU.

Speed choices:
- ``static_cache`` (default on CUDA): ``cache_implementation="static"``, which
  lets transformers compile the decode step; ~10x the eager figure at batch 1
  on an H100 (../shared/README.md). Each new (batch, length) shape compiles
  once, so prompts are padded to a multiple of ``pad_to_multiple_of`` and
  batches up to the next power of two (dummy rows), bounding the shapes.
- bf16 on CUDA, fp32 on CPU (bf16 matmuls are slow on most CPUs).

Random weights generate gibberish and rarely an end-of-turn token, which is
fine for throughput: the text is not the point there.

Tool calling: Gemma 3 has no native tool-call format; it calls tools through
the agent's step protocol (``agents.protocol``, Gemma's documented
function-calling style), and a request's ``response_schema`` constrains that
row's decoding with llguidance (the grammar engine llama.cpp uses as well):
a per-row token mask at every step, so even random weights produce one valid
decision. Why llguidance: a small wheel with no dependencies that works with
torch 2.13 CPU and transformers 5 here, JSON schema compiled lazily per
request (no per-schema precompilation of the vocabulary, which matters when
every turn narrows its own schema); xgrammar would pull triton, outlines a
larger stack.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.backends.base import AgentModelHandler
from agents.model_io import INFERENCE_ARGS, ChatMessage, ModelRequest, ModelResponse
from agents.streaming import TextSink, sinks_for

if TYPE_CHECKING:
    import torch

RANDOM_PREFIX = "random:"
METRICS_NAMESPACE = "supportflow_gemma"
# `min_tokens` forces generation past end-of-turn (benchmarks: every row makes exactly N tokens).
GEMMA_INFERENCE_ARGS = INFERENCE_ARGS | {"min_tokens"}

# Gemma 3 1B's text architecture (google/gemma-3-1b-it config.json), for random-weight runs.
GEMMA3_1B_SHAPE: dict[str, Any] = {
    "vocab_size": 262144,
    "hidden_size": 1152,
    "intermediate_size": 6912,
    "num_hidden_layers": 26,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "sliding_window": 512,
    "max_position_embeddings": 32768,
    "rope_theta": 1_000_000.0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh",
}
TINY_SHAPE: dict[str, Any] = {
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "sliding_window": 64,
    # Room for the step protocol's prompts in bytes (the toy tokenizer is byte-level).
    "max_position_embeddings": 16384,
}
RANDOM_SHAPES: dict[str, dict[str, Any]] = {"gemma-3-1b": GEMMA3_1B_SHAPE, "tiny": TINY_SHAPE}

# Gemma's turn format: system text folds into the first user turn; the assistant is "model".
# Tool results have no role of their own in Gemma, so they travel as user turns.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.system = ns.system + m['content'] + '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{%- if role == 'user' and ns.system -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{%- if m['role'] == 'tool' -%}{{ 'Tool result (' + (m.get('name') or 'tool') + '): ' }}{%- endif -%}"
    "{{ m['content'] + '<end_of_turn>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")


def byte_level_tokenizer() -> Any:
    """A byte-level tokenizer made in code (no files): every byte is a token, plus Gemma's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([*_SPECIAL_TOKENS, *alphabet])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(_SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", padding_side="left"
    )
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA device if there is one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--model_device={device} but torch sees no CUDA device")
    return device


def _dtype(name: str, device: str) -> torch.dtype:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


@dataclass(frozen=True)
class GemmaConfig:
    """Everything that decides which model object a process holds (the process cache's key)."""

    model_path: str = "random:tiny"
    model_name: str = "gemma"
    device: str = "auto"
    dtype: str = "auto"
    static_cache: bool | None = None  # None: on for CUDA
    pad_to_multiple_of: int = 64
    # Room for the tool-calling prompt (system text, tool declarations, history): Gemma 3 reads 32k+ tokens,
    # and random:* weights use a byte-level tokenizer, so their prompts count bytes.
    max_prompt_tokens: int = 12288
    seed: int = 0


class GemmaModel:
    """One loaded model and tokenizer on one device; ``generate_batch`` is its only entry point.

    Only plain values cross ``generate_batch``, so it also works behind Beam's
    multi-process proxy (``share_model_across_processes``). A lock serialises
    calls: one ``generate`` at a time per copy is what the GPU can do anyway.
    """

    def __init__(self, config: GemmaConfig) -> None:
        import torch

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = _dtype(config.dtype, self.device)
        self.static_cache = self.device.startswith("cuda") if config.static_cache is None else config.static_cache
        self.model_name = config.model_name
        self._lock = threading.Lock()
        torch.manual_seed(config.seed)
        if config.model_path.startswith(RANDOM_PREFIX):
            self.model, self.tokenizer = _random_model(config.model_path[len(RANDOM_PREFIX) :], self.dtype, self.device)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(config.model_path, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=self.dtype).to(self.device)
        self.model.eval()
        self._stop_ids = _stop_ids(self.tokenizer)
        # Control tokens typed by a user must stay text, or a message could close its own turn.
        self._markers = tuple({*self.tokenizer.all_special_tokens, "<start_of_turn>", "<end_of_turn>"})

    def render(self, request: ModelRequest) -> str:
        return self.tokenizer.apply_chat_template(
            [_as_template_message(m, self._markers) for m in request.messages],
            tokenize=False,
            add_generation_prompt=True,
        )

    def generate_batch(
        self,
        requests: Sequence[ModelRequest],
        caps: Sequence[int],
        min_tokens: int = 0,
        temperature: float = 0.0,
        sinks: Sequence[TextSink | None] = (),
    ) -> list[ModelResponse]:
        """One ``generate`` for the whole batch; row i is cut at ``caps[i]`` tokens.

        A prompt longer than ``max_prompt_tokens`` gets an error response of its
        own instead of failing the batch.
        """
        import torch

        texts = [self.render(r) for r in requests]
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        ok = [i for i, ids in enumerate(encoded) if len(ids) <= self.config.max_prompt_tokens]
        out: list[ModelResponse] = [
            ModelResponse(
                text="",
                model=self.model_name,
                prompt_tokens=len(ids),
                error=f"prompt of {len(ids)} tokens exceeds max_prompt_tokens={self.config.max_prompt_tokens}",
            )
            for ids in encoded
        ]
        if not ok:
            return out
        new_tokens = max(caps[i] for i in ok)
        rows = [encoded[i] for i in ok]
        # Dummy rows up to a power of two: a bounded set of batch shapes to compile for.
        padded_rows = rows + [rows[-1]] * (_next_pow2(len(rows)) - len(rows)) if self.static_cache else rows
        batch = self.tokenizer.pad(
            {"input_ids": padded_rows},
            padding=True,
            pad_to_multiple_of=self.config.pad_to_multiple_of,
            return_tensors="pt",
        ).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": new_tokens,
            "min_new_tokens": min(min_tokens, new_tokens),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self._stop_ids,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        schemas = [requests[i].response_schema for i in ok]
        constraint = None
        if any(s is not None for s in schemas):
            from agents.backends.constrained import SchemaConstraint

            constraint = SchemaConstraint(self.tokenizer, schemas + [None] * (len(padded_rows) - len(rows)))
            kwargs["logits_processor"] = [constraint]
        streaming = {row: sinks[i] for row, i in enumerate(ok) if i < len(sinks) and sinks[i] is not None}
        if streaming:
            from agents.backends.hf_stream import RowStreamer

            row_caps = {row: caps[i] for row, i in enumerate(ok)}
            kwargs["streamer"] = RowStreamer(self.tokenizer, streaming, row_caps, self._stop_ids)
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            generated = self.model.generate(**batch, **kwargs)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            model_ms = (time.perf_counter() - start) * 1000.0
        completions = generated[:, batch["input_ids"].shape[1] :].tolist()
        for row, i in enumerate(ok):
            tokens, finish = _cut(completions[row], caps[i], self._stop_ids)
            out[i] = ModelResponse(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=len(encoded[i]),
                completion_tokens=len(tokens),
                model_ms=model_ms,
                model=self.model_name,
                finish_reason=finish,
            )
        return out


def _random_model(shape: str, dtype: torch.dtype, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    if shape not in RANDOM_SHAPES:
        raise ValueError(f"unknown random model shape {shape!r}; choose one of {sorted(RANDOM_SHAPES)}")
    tokenizer = byte_level_tokenizer()
    config = Gemma3TextConfig(
        **RANDOM_SHAPES[shape],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # Built straight on the target device in the target dtype: a 1B model is ~2 GB in bf16.
    with torch.device(device):
        model = Gemma3ForCausalLM(config).to(dtype)
    return model, tokenizer


def _stop_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return sorted(i for i in ids if i is not None)


def _as_template_message(message: ChatMessage, markers: Sequence[str]) -> dict[str, Any]:
    content = message.content
    while any(m in content for m in markers):  # a loop: removing one marker can join another
        for marker in markers:
            content = content.replace(marker, "")
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name:
        out["name"] = message.name
    return out


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _cut(tokens: list[int], cap: int, stop_ids: Sequence[int]) -> tuple[list[int], str]:
    """A row's own completion: up to its first stop token, at most ``cap`` tokens."""
    for n, token in enumerate(tokens[:cap]):
        if token in stop_ids:
            return tokens[:n], "stop"
    return tokens[:cap], "length"


_LOADED: dict[GemmaConfig, GemmaModel] = {}
_LOADED_LOCK = threading.Lock()


def load_gemma(config: GemmaConfig) -> GemmaModel:
    """The process's copy of the model for ``config`` (loaded once).

    Held strongly for the process's life: RunInference's weak ``Shared`` cache
    lets runners that tear DoFns down per bundle (the local runner) reload a
    model per bundle otherwise; for a 1B model that is seconds each time.
    """
    with _LOADED_LOCK:
        if config not in _LOADED:
            _LOADED[config] = GemmaModel(config)
        return _LOADED[config]


class GemmaHandler(AgentModelHandler[GemmaModel]):
    """RunInference handler: a batch of requests is one batched ``generate``.

    Same element/result contract as the other backends (``agents.backends``).
    ``max_batch_size`` is how many turns share one ``generate``; with
    ``max_batch_duration_secs`` a streaming pipeline waits that long at most
    to fill a batch, so turns from different sessions that arrive close
    together share the GPU. ``large_model=True`` (the default on Dataflow GPU
    workers, see ``pipeline.graph``) loads one copy per machine that every SDK
    process reaches through Beam's multi-process proxy.
    """

    METRICS_NAMESPACE = METRICS_NAMESPACE
    STREAMS_TEXT = True  # a batch-wide transformers streamer (agents.backends.hf_stream)
    INFERENCE_ARGS = GEMMA_INFERENCE_ARGS

    def __init__(
        self,
        *,
        config: GemmaConfig | None = None,
        max_tokens: int = 96,
        max_batch_size: int = 8,
        min_batch_size: int | None = None,
        max_batch_duration_secs: float | None = None,
        large_model: bool = False,
        model_copies: int | None = None,
    ) -> None:
        if max_tokens < 1 or max_batch_size < 1:
            raise ValueError("need max_tokens >= 1 and max_batch_size >= 1")
        super().__init__(
            max_batch_size=max_batch_size,
            min_batch_size=min_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            large_model=large_model,
            model_copies=model_copies,
        )
        self._config = config or GemmaConfig()
        self._model_name = self._config.model_name
        self._max_tokens = max_tokens

    @property
    def config(self) -> GemmaConfig:
        return self._config

    def load_model(self) -> GemmaModel:
        return load_gemma(self._config)

    def answer(
        self, model: GemmaModel, requests: Sequence[ModelRequest], caps: Sequence[int], args: Mapping[str, Any]
    ) -> list[ModelResponse]:
        return model.generate_batch(
            requests,
            caps,
            min_tokens=int(args.get("min_tokens", 0)),
            temperature=float(args.get("temperature", 0.0)),
            sinks=sinks_for(len(requests)) if isinstance(model, GemmaModel) else (),
        )
