"""Narrow a tool's argument schema to the values that are valid in this turn.

A small model fills arguments well only when there is little to choose from,
so each argument's JSON schema is cut down before decoding:

- an id argument (``ToolSpec.id_args``: its id kind, whose format the pack
  declares): the session customer's own ids of that kind (as the context lists
  them), or only those the customer referred to: by id in this turn (an id not
  on the account stays, so the tool can say it was not found), by id earlier in
  the conversation, or by naming one of the record's words (an item's name);
- presets of the route and single choices become ``const``;
- for small models (``from_text``), the tool's free-text arguments
  (``ToolSpec.text_args``: a search query, a summary) are the customer's own
  words, and its address fields (``ToolSpec.span_args``) one of the spans of
  the customer's message that look like a street, a city or a postcode;
  optional arguments take the tool's default. Any other string is left to the
  model, bounded: no argument is filled with a message it was not declared for.

``narrow`` returns the closed parameters schema; ``fixed_arguments`` says
whether it leaves nothing to decode (every argument a ``const``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.spec import IdFormat, ToolSpec

MAX_FREE_TEXT = 160  # a bounded string for models that write their own argument text
_WORD = re.compile(r"[a-z]{4,}")
_SPLIT = re.compile(r"[,;\n]|\b(?:to|instead|please|at)\b|[.!?](?=\s|$)", re.IGNORECASE)


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") else word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def text_spans(text: str, ids: re.Pattern[str] | None = None) -> list[str]:
    """Segments of ``text`` between commas, sentence ends and linking words, and the digit tokens inside them.

    A segment holding one of the business's ids (``ids``) is no address field.
    """
    spans: list[str] = []
    for part in _SPLIT.split(text):
        part = part.strip(" \t.!?:'\"()")
        if not part or (ids is not None and ids.search(part)):
            continue
        spans.append(part)
        words = part.split()
        digits = [w for w in words if any(c.isdigit() for c in w)]
        if digits and len(words) > 1 and len(digits) < len(words):
            spans.append(" ".join(w for w in words if w not in digits))
            spans.extend(digits)
    return [s for s in dict.fromkeys(spans) if len(s) <= 120]


def _looks_like(kind: str, span: str) -> bool:
    words = span.split()
    has_digit = any(c.isdigit() for c in span)
    if kind == "postcode":
        return has_digit and len(span) <= 10
    if kind == "street":
        return has_digit and len(words) >= 2
    return not has_digit and 1 <= len(words) <= 3 and all(w[:1].isupper() for w in words)  # city


@dataclass(frozen=True)
class TurnFacts:
    """What narrowing may use: this turn's text, earlier messages, the customer's own records per id kind."""

    text: str
    history: tuple[str, ...] = ()  # earlier messages, newest first
    records: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)  # id kind -> own, newest first
    formats: Mapping[str, IdFormat] = field(default_factory=dict)  # the pack's id formats
    from_text: bool = True
    any_id: re.Pattern[str] | None = None  # every id of the pack (kept out of address spans)

    def own_ids(self, kind: str) -> list[str]:
        fmt = self.formats[kind]
        return [str(r[fmt.field]) for r in self.records.get(kind, ())]

    def referenced_ids(self, kind: str) -> list[str]:
        fmt = self.formats[kind]
        mentioned = list(dict.fromkeys(m.group(0).upper() for m in fmt.regex.finditer(self.text)))
        if mentioned:
            return mentioned
        own = {i.upper(): i for i in self.own_ids(kind)}
        words = _words(self.text)
        named = [str(r[fmt.field]) for r in self.records.get(kind, ()) if words & _words(" ".join(fmt.naming_words(r)))]
        if named:
            return named
        for earlier in self.history:
            ids = [own[m.group(0).upper()] for m in fmt.regex.finditer(earlier) if m.group(0).upper() in own]
            if ids:
                return list(dict.fromkeys(ids))
        return []


def allowed(prop: Mapping[str, Any]) -> list[Any]:
    """The values a narrowed property allows: its ``const``, or its ``enum`` ([] when it is left open)."""
    return [prop["const"]] if "const" in prop else list(prop.get("enum") or ())


def _choice(values: Sequence[Any]) -> dict[str, Any]:
    return {"const": values[0]} if len(values) == 1 else {"enum": list(values)}


def narrow(
    declaration: Mapping[str, Any], facts: TurnFacts, spec: ToolSpec, presets: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The tool's parameters schema narrowed for this turn; None if the tool cannot be called (no valid value)."""
    presets = presets or {}
    schema = declaration.get("parameters") or {}
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out: dict[str, Any] = {}
    need: list[str] = []
    for name, prop in props.items():
        narrowed = _narrow_one(name, prop, name in required, presets, facts, spec)
        if narrowed is None:
            if name in required:
                return None
            continue
        out[name] = narrowed
        if name in required or "const" in narrowed:
            need.append(name)
    if facts.from_text:
        _disjoint_spans(out, [n for n in spec.span_args if n in out])
    return {"type": "object", "properties": out, "required": need, "additionalProperties": False}


def _overlap(a: str, b: str) -> bool:
    return a in b or b in a


def _disjoint_spans(props: dict[str, Any], fields: Sequence[str]) -> None:
    """Address fields read disjoint parts of the message: a span settled for one field leaves the others.

    "12 Oak Street, Springfield 62704": the postcode can only be 62704, so "Springfield 62704" is no street;
    the street is then "12 Oak Street", so "Oak Street" is no city. A candidate goes only while another stays,
    so what is left is still one of the message's own spans, and a field with no honest reading still fails.
    """
    changed = True
    while changed:
        changed = False
        fixed = {f: str(props[f]["const"]) for f in fields if "const" in props[f]}
        for f in fields:
            choices = props[f].get("enum")
            if not choices:
                continue
            kept = [c for c in choices if not any(_overlap(str(c), v) for g, v in fixed.items() if g != f)]
            if kept and len(kept) < len(choices):
                props[f] = _choice(kept)
                changed = True


def _narrow_one(
    name: str, prop: Mapping[str, Any], required: bool, presets: Mapping[str, Any], facts: TurnFacts, spec: ToolSpec
) -> dict[str, Any] | None:
    if name in presets:
        return {"const": presets[name]}
    if name in spec.id_args:
        kind = spec.id_args[name]
        refs = facts.referenced_ids(kind)
        if refs:
            return _choice(refs)
        if not required and facts.from_text:
            return None  # e.g. list the recent records instead of guessing one
        own = facts.own_ids(kind)
        return _choice(own) if own else None
    if "enum" in prop or "const" in prop:
        allowed = list(prop["enum"]) if "enum" in prop else [prop["const"]]
        if facts.from_text:
            # A value the customer named (one of the allowed ones, as a word) is the value; an action is never
            # taken with a value the customer did not name (fails closed: the reply asks instead).
            named = [v for v in allowed if re.search(rf"(?<![\w.]){re.escape(str(v))}(?![\w.])", facts.text, re.I)]
            if len(named) == 1:
                return {"const": named[0]}
            if spec.changes_data and len(allowed) > 1:
                return None
            if not required:
                return None
        return {k: prop[k] for k in ("enum", "const") if k in prop}
    if prop.get("type") == "string":
        limit = int(prop.get("maxLength", MAX_FREE_TEXT))
        if facts.from_text:
            if name in spec.span_args:
                # Fails closed: a field no span of the message fills honestly is not made up by the model.
                every = text_spans(facts.text, facts.any_id)
                spans = [s for s in every if _looks_like(spec.span_args[name], s)]
                if spec.span_args[name] == "postcode":
                    # The number that opens the first street ("12 Oak Street") is the house number, not a postcode.
                    street = next((s for s in every if _looks_like("street", s)), "")
                    house = street.split()[0] if street else ""
                    spans = [s for s in spans if s != house] or spans
                return _choice(spans) if spans else None
            if name in spec.text_args:
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
