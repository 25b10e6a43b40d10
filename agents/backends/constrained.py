"""Constrained decoding for transformers' ``generate``: each row's tokens kept valid against its JSON schema.

The step protocol (``agents.protocol``) asks for one JSON decision per step;
llama.cpp and vLLM constrain decoding themselves, and this is the same for a
model held in the worker: an llguidance matcher per row, and at every decoding
step a token mask that allows only tokens that keep the row's output a prefix
of a valid document (then only end-of-sequence once it is complete). Rows
without a schema (and the dummy rows that pad a batch) are left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

_TOKENIZERS: dict[int, Any] = {}
_TOKENIZERS_LOCK = threading.Lock()


def ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a Hugging Face tokenizer (built once per tokenizer object: it walks the vocabulary)."""
    import llguidance.hf

    with _TOKENIZERS_LOCK:
        key = id(tokenizer)
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
        return _TOKENIZERS[key][1]


class SchemaConstraint:
    """A transformers logits processor: ``schemas[i]`` (or None) constrains row ``i`` of the batch."""

    def __init__(self, tokenizer: Any, schemas: Sequence[Mapping[str, Any] | None]) -> None:
        import llguidance
        import llguidance.torch

        self._ll = ll_tokenizer(tokenizer)
        self._eos = [i for i in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
                     if isinstance(i, int) and i != tokenizer.unk_token_id]  # fmt: skip
        self._matchers: list[Any] = []
        for schema in schemas:
            if schema is None:
                self._matchers.append(None)
                continue
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                dict(schema), defaults={"whitespace_flexible": False}
            )
            matcher = llguidance.LLMatcher(self._ll, grammar)
            if matcher.get_error():
                raise ValueError(f"response_schema does not compile: {matcher.get_error()}")
            self._matchers.append(matcher)
        self._bitmask = llguidance.torch.allocate_token_bitmask(len(schemas), self._ll.vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        vocab = self._ll.vocab_size
        for row, matcher in enumerate(self._matchers):
            if matcher is None:
                continue
            if self._started and not matcher.is_stopped() and not matcher.consume_token(int(input_ids[row, -1])):
                self._matchers[row] = None  # cannot happen under the mask; leave the row unconstrained
                continue
            if matcher.is_stopped():
                keep = scores[row, self._eos].clone()
                scores[row, :] = float("-inf")
                scores[row, self._eos] = keep
                continue
            llguidance.torch.fill_next_token_bitmask(matcher, self._bitmask, row)
            llguidance.torch.apply_token_bitmask_inplace(scores[row : row + 1, :vocab], self._bitmask[row : row + 1])
            if scores.shape[1] > vocab:
                scores[row, vocab:] = float("-inf")
        self._started = True
        return scores
