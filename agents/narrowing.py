"""Narrow a tool's argument schema to the values that are valid in this turn.

A small model fills arguments well only when there is little to choose from,
so each argument's JSON schema is cut down before decoding:

- ``order_id``: the session customer's own order ids (newest first), or only
  those the customer referred to: by id in this turn (an id not on the account
  stays, so the tool can say it was not found), by id earlier in the
  conversation, or by naming an item of the order;
- presets of the route (``kind: refund``) and single choices become ``const``;
- for small models (``from_text``), free text (a search query, a summary) is the
  customer's own words, and address fields are one of the spans of the
  customer's message that look like a street, a city or a postcode; optional
  arguments take the tool's default.

``narrow`` returns the closed parameters schema; ``fixed_arguments`` says
whether it leaves nothing to decode (every argument a ``const``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ORDER_ID = re.compile(r"\bO-C\d{4,}-\d+\b", re.IGNORECASE)
FREE_TEXT_ARGS = frozenset({"query", "summary", "details", "subject", "reason"})
ADDRESS_ARGS = frozenset({"line1", "city", "postcode"})
MAX_FREE_TEXT = 160  # a bounded string for models that write their own argument text
_WORD = re.compile(r"[a-z]{4,}")
_SPLIT = re.compile(r"[,;\n]|\b(?:to|instead|please|at)\b|[.!?](?=\s|$)", re.IGNORECASE)


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") else word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def text_spans(text: str) -> list[str]:
    """Segments of ``text`` between commas, sentence ends and linking words, and the digit tokens inside them."""
    spans: list[str] = []
    for part in _SPLIT.split(text):
        part = part.strip(" \t.!?:'\"()")
        if not part or ORDER_ID.search(part):
            continue
        spans.append(part)
        words = part.split()
        digits = [w for w in words if any(c.isdigit() for c in w)]
        if digits and len(words) > 1 and len(digits) < len(words):
            spans.append(" ".join(w for w in words if w not in digits))
            spans.extend(digits)
    return [s for s in dict.fromkeys(spans) if len(s) <= 120]


def _looks_like(field: str, span: str) -> bool:
    words = span.split()
    has_digit = any(c.isdigit() for c in span)
    if field == "postcode":
        return has_digit and len(span) <= 10
    if field == "line1":
        return has_digit and len(words) >= 2
    return not has_digit and 1 <= len(words) <= 3 and all(w[:1].isupper() for w in words)  # city


@dataclass(frozen=True)
class TurnFacts:
    """What narrowing may use: this turn's text, earlier messages, the customer's own orders (newest first)."""

    text: str
    history: tuple[str, ...] = ()  # earlier messages, newest first
    orders: tuple[Mapping[str, Any], ...] = ()
    from_text: bool = True

    @property
    def own_ids(self) -> list[str]:
        return [str(o["order_id"]) for o in self.orders if o.get("order_id")]

    def referenced_ids(self) -> list[str]:
        mentioned = list(dict.fromkeys(m.upper() for m in ORDER_ID.findall(self.text)))
        if mentioned:
            return mentioned
        own = {i.upper(): i for i in self.own_ids}
        words = _words(self.text)
        named = [
            str(o["order_id"]) for o in self.orders if o.get("order_id") and words & _words(" ".join(_item_names(o)))
        ]
        if named:
            return named
        for earlier in self.history:
            ids = [own[m.upper()] for m in ORDER_ID.findall(earlier) if m.upper() in own]
            if ids:
                return list(dict.fromkeys(ids))
        return []


def _item_names(order: Mapping[str, Any]) -> list[str]:
    items = order.get("items") if isinstance(order.get("items"), Sequence) else ()
    return [str(i.get("name", "")) for i in items if isinstance(i, Mapping)]


def _choice(values: Sequence[Any]) -> dict[str, Any]:
    return {"const": values[0]} if len(values) == 1 else {"enum": list(values)}


def narrow(
    declaration: Mapping[str, Any], facts: TurnFacts, presets: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The tool's parameters schema narrowed for this turn; None if the tool cannot be called (no valid value)."""
    presets = presets or {}
    schema = declaration.get("parameters") or {}
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out: dict[str, Any] = {}
    need: list[str] = []
    for name, prop in props.items():
        spec = _narrow_one(name, prop, name in required, presets, facts)
        if spec is None:
            if name in required:
                return None
            continue
        out[name] = spec
        if name in required or "const" in spec:
            need.append(name)
    return {"type": "object", "properties": out, "required": need, "additionalProperties": False}


def _narrow_one(
    name: str, prop: Mapping[str, Any], required: bool, presets: Mapping[str, Any], facts: TurnFacts
) -> dict[str, Any] | None:
    if name in presets:
        return {"const": presets[name]}
    if name == "order_id":
        refs = facts.referenced_ids()
        if refs:
            return _choice(refs)
        if not required and facts.from_text:
            return None  # e.g. list recent orders instead of guessing one
        return _choice(facts.own_ids) if facts.own_ids else None
    if "enum" in prop or "const" in prop:
        if not required and facts.from_text:
            return None
        return {k: prop[k] for k in ("enum", "const") if k in prop}
    if prop.get("type") == "string":
        limit = int(prop.get("maxLength", MAX_FREE_TEXT))
        if facts.from_text:
            if name in ADDRESS_ARGS:
                spans = [s for s in text_spans(facts.text) if _looks_like(name, s)]
                if spans:
                    return _choice(spans)
            elif name in FREE_TEXT_ARGS or required:
                text = " ".join(facts.text.split())[:limit].strip()
                return {"const": text} if len(text) >= int(prop.get("minLength", 0)) else None
            if not required:
                return None
        bounded: dict[str, Any] = {"type": "string", "maxLength": min(limit, MAX_FREE_TEXT)}
        if prop.get("minLength"):
            bounded["minLength"] = prop["minLength"]
        return bounded
    if prop.get("type") == "integer":
        if not required and facts.from_text:
            return None
        return {k: prop[k] for k in ("type", "minimum", "maximum") if k in prop}
    return None if not required else dict(prop)


def fixed_arguments(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """The arguments when ``parameters`` leaves no choice (every property a required ``const``), else None."""
    props: Mapping[str, Any] = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    if all("const" in p for p in props.values()) and set(props) <= required:
        return {k: p["const"] for k, p in props.items()}
    return None
