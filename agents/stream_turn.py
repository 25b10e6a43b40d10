"""Which agent steps stream, and the guardrail check their releases pass (``agents.streaming``).

A step streams only when it is a text step:
- native tool calls (Gemini): every step may be text; the backend halts the stream as soon as a
  function call shows up, and a step that ends in tool calls retracts what it showed;
- the constrained protocol: the plain reply step (a route to ``reply``: no response schema, no
  routing query), and a decision step that may reply in the model's own words (Gemma's first step):
  its output is JSON, so ``ReplyJsonSink`` streams only the ``text`` of a ``reply`` decision and halts
  at once for a tool call. Replies rendered from tool results are written by ``agents.replies``, not by
  the model: no deltas.
- no tools (the instant stub): nothing to stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from agents import grounding, guardrails, protocol
from agents.finish import grounding_sources
from agents.model_io import ModelResponse
from agents.model_text import reply_text
from agents.state import TOOL_MODE_NATIVE, AgentState, Awaiting, session_facts
from agents.streaming import GuardedReleaser, TextSink


def streams(state: object) -> bool:
    """True if the next model step of ``state`` (a RunInference element) writes reply text."""
    if not isinstance(state, AgentState) or state.done:
        return False
    if state.config.tool_mode == TOOL_MODE_NATIVE:
        return True
    if state.awaiting == Awaiting.TEXT:
        return True
    if state.awaiting == Awaiting.DECISION and state.asked is not None and state.asked.response_schema is not None:
        return replies_in_words(state.asked.response_schema)
    return False


def replies_in_words(schema: Mapping[str, Any]) -> bool:
    """True if a decision schema lets the model reply with text of its own (``protocol.reply_variant(True)``)."""
    for variant in schema.get("anyOf") or (schema,):
        props = variant.get("properties") or {}
        name = (props.get("name") or {}).get("const")
        params = (props.get("parameters") or {}).get("properties") or {}
        if name == protocol.REPLY and "text" in params:
            return True
    return False


def output_check(state: AgentState) -> Callable[[str], bool]:
    """``check(prefix)``: the prefix passes the output guardrails with the turn's facts, unchanged, and every
    sentence of it is grounded in what the turn had (``agents.grounding``, as the final reply is checked):
    a sentence the final check would replace is never shown."""
    facts = session_facts(state)
    sources = grounding_sources(state)

    def check(prefix: str) -> bool:
        verdict = guardrails.check_output(prefix, facts)
        if not (verdict.ok and verdict.text == prefix):
            return False
        return not grounding.degenerate(prefix) and grounding.check(prefix, sources).grounded

    return check


def releaser_for(state: AgentState, emit: Callable[[str], None]) -> GuardedReleaser:
    return GuardedReleaser(output_check(state), emit)


def final_text_of(response: ModelResponse) -> str | None:
    """The text the step will reply with if the response finishes the turn as a model-written reply, else None."""
    if response.error or response.tool_calls or response.route:
        return None
    return reply_text(response) or None


_REPLY_OPENING = re.compile(
    r'\s*\{\s*"name"\s*:\s*"' + re.escape(protocol.REPLY) + r'"\s*,\s*"parameters"\s*:\s*\{\s*"text"\s*:\s*"'
)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class ReplyJsonSink:
    """A ``TextSink`` for a decision step: passes on only the ``text`` of ``{"name": "reply", "parameters":
    {"text": "..."}}`` as it is decoded (JSON escapes resolved), and finishes the releaser with the whole
    text at its closing quote. Any other opening (a tool call, another key order) halts at once."""

    def __init__(self, releaser: GuardedReleaser) -> None:
        self._releaser = releaser
        self._raw = ""
        self._pos = -1  # index in _raw where the string's content starts, once the opening matched
        self._text: list[str] = []
        self._done = False

    def feed(self, piece: str) -> None:
        if self._done:
            return
        self._raw += piece
        if self._pos < 0:
            m = _REPLY_OPENING.match(self._raw)
            if m is None:
                if not _could_open(self._raw):
                    self.halt()
                return
            self._pos = m.end()
        out: list[str] = []
        i = self._pos
        while i < len(self._raw):
            ch = self._raw[i]
            if ch == '"':
                self._done = True
                if out:
                    self._releaser.feed("".join(out))
                    self._text.extend(out)
                self._releaser.finish("".join(self._text).strip())
                return
            if ch == "\\":
                if i + 1 >= len(self._raw):
                    break
                esc = self._raw[i + 1]
                if esc == "u":
                    if i + 6 > len(self._raw):
                        break
                    try:
                        out.append(json.loads(f'"{self._raw[i : i + 6]}"'))
                    except ValueError:
                        self.halt()
                        return
                    i += 6
                    continue
                out.append(_ESCAPES.get(esc, esc))
                i += 2
                continue
            out.append(ch)
            i += 1
        self._pos = i
        if out:
            self._text.extend(out)
            self._releaser.feed("".join(out))

    def halt(self) -> None:
        self._done = True
        self._releaser.halt()


def _could_open(raw: str) -> bool:
    """True while ``raw`` may still become the reply opening (a prefix of it, white space aside)."""
    target = '{"name":"' + protocol.REPLY + '","parameters":{"text":"'
    squeezed = re.sub(r"\s+", "", raw)
    return target.startswith(squeezed)


def sink_for_step(state: AgentState, releaser: GuardedReleaser) -> TextSink:
    """The sink a step's backend feeds: the releaser itself for plain text, the JSON adapter for a decision."""
    if state.awaiting == Awaiting.DECISION:
        return ReplyJsonSink(releaser)
    return releaser
