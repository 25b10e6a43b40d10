"""A transformers streamer for a whole batch: each row's new tokens, decoded, fed to that row's ``TextSink``.

transformers' own ``TextStreamer`` / ``TextIteratorStreamer`` take batch size 1; the Gemma backend
decodes a batch in one ``generate``. ``RowStreamer`` subclasses ``BaseStreamer``: ``generate`` calls
``put`` with the prompt first (skipped), then with each step's new tokens for every row. A row with a
sink decodes its tokens so far and feeds the new suffix (held back while it ends in an incomplete
UTF-8 sequence); it stops at its first stop token or its own token cap, like ``hf_gemma._cut``.
Padding rows and rows without a sink are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers.generation.streamers import BaseStreamer

from agents.streaming import TextSink


class RowStreamer(BaseStreamer):
    def __init__(
        self, tokenizer: Any, sinks: Mapping[int, TextSink], caps: Mapping[int, int], stop_ids: Sequence[int]
    ) -> None:
        self._tokenizer = tokenizer
        self._sinks = dict(sinks)
        self._caps = dict(caps)
        self._stop = set(stop_ids)
        self._tokens: dict[int, list[int]] = {row: [] for row in self._sinks}
        self._sent: dict[int, int] = {row: 0 for row in self._sinks}
        self._done: set[int] = set()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True  # the first call carries the prompt
            return
        rows = value.tolist()
        for row, sink in self._sinks.items():
            if row in self._done or row >= len(rows):
                continue
            new = rows[row] if isinstance(rows[row], list) else [rows[row]]
            for token in new:
                if token in self._stop or len(self._tokens[row]) >= self._caps.get(row, 1 << 30):
                    self._done.add(row)
                    break
                self._tokens[row].append(token)
            text = self._tokenizer.decode(self._tokens[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # an incomplete multi-byte character: wait for the rest
            if len(text) > self._sent[row]:
                sink.feed(text[self._sent[row] :])
                self._sent[row] = len(text)

    def end(self) -> None:
        pass
