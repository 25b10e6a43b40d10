"""The offline eval scenario format: load, validate, explain what is wrong.

A scenario file (YAML or JSON) holds one scenario (a mapping with an ``id``) or
several (``scenarios: [...]``). The schema is the pydantic models below
(``Scenario.model_json_schema()`` prints it as JSON Schema); docs/evals.md documents
every construct with an example. Validation is strict: unknown keys are
errors (a typo must not silently weaken a check), tool names and their
arguments are checked against the real tool registry, and every problem of a
file is reported at once with its location::

    packs/telco/scenarios/usage.yaml: scenarios[2] (usage-left): expect.tools.calls[0].name:
      unknown tool 'usage'; known: get_plan_usage, list_invoices, ...

Relative document paths (``tickets/T-1``) are under ``customers/<customer>``;
paths starting with ``customers/`` or ``help_articles/`` are absolute.
Timestamps in overrides may be ISO strings, YAML timestamps, or
``{$days_ago: N}`` / ``{$days_ahead: N}`` relative to the pack's seed "now" (``Pack.reference_time``).
Field values in expectations are literals or one operator:
``{$exists: bool}``, ``{$in: [..]}``, ``{$not_in: [..]}``, ``{$ne: v}``, ``{$contains: "text"}``,
``{$contains_any: ["a", "b"]}``; a field key ``subject|details`` matches when any of those fields does.
Counts are an integer (exactly) or ``{min: N, max: M}`` (either bound may be left out).
Checks compose with ``any_of`` / ``all_of`` (lists of check groups, nested at will).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.finish import HANDOFF_TEXTS
from evals.packworld import tool_arguments
from tools.packs import DEFAULT_PACK, load_pack

SCENARIO_SUFFIXES = (".yaml", ".yml", ".json")
# Categories every pack shares; reports list them after the pack's own (``categories`` of its eval hooks).
CATEGORIES: tuple[str, ...] = ("policy", "handoff", "adversarial")
VALUE_OPERATORS: frozenset[str] = frozenset({"$exists", "$in", "$not_in", "$ne", "$contains", "$contains_any"})
# Why a turn was handed to a human (contract.handoff.HANDOFF_REASONS); the hand-off texts are keyed by it.
HANDOFF_REASONS: tuple[str, ...] = tuple(HANDOFF_TEXTS)
# The harness's message ids: scripted turn i (and a timed message without an id) is message "m-<i>".
MESSAGE_ID_PREFIX = "m-"
TIME_OPERATORS: frozenset[str] = frozenset({"$days_ago", "$days_ahead"})

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,79}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@#-]{0,127}$")
_ABSOLUTE_ROOTS = ("customers", "help_articles")
# The pack whose tools and ids scenarios are validated against while they load (load_scenarios(pack=...)).
_PACK: ContextVar[str] = ContextVar("scenario_pack", default=DEFAULT_PACK)


def current_pack() -> str:
    """The pack the scenarios being loaded (or scored) belong to (``load_scenarios(..., pack=...)``; default
    the default pack)."""
    return _PACK.get()


@contextmanager
def for_pack(pack: str) -> Iterator[None]:
    """Within the block, ``current_pack()`` is ``pack`` (loading and scoring a pack's scenarios)."""
    token = _PACK.set(pack)
    try:
        yield
    finally:
        _PACK.reset(token)


class ScenarioError(ValueError):
    """One or more scenario files are invalid; ``problems`` lists every one with its location."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid scenarios:\n  " + "\n  ".join(self.problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(path: str, *, document: bool) -> str:
    parts = path.strip("/").split("/")
    if not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"{path!r} is not a Firestore path (segments of letters, digits, _.:@#-)")
    absolute = parts[0] in _ABSOLUTE_ROOTS
    # Relative paths start below customers/<id>: collection/doc[/collection/doc...].
    n = len(parts) + (0 if absolute else 2)
    if document and n % 2:
        raise ValueError(f"{path!r} names a collection, not a document (give collection/document)")
    if not document and not n % 2:
        raise ValueError(f"{path!r} names a document, not a collection")
    return "/".join(parts)


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
        if len(value) != 1 or next(iter(value)) not in VALUE_OPERATORS:
            raise ValueError(f"{where}: an operator value is one of {sorted(VALUE_OPERATORS)}, alone: got {value}")
        op, arg = next(iter(value.items()))
        if op == "$exists" and not isinstance(arg, bool):
            raise ValueError(f"{where}: $exists takes true or false")
        if op in ("$in", "$not_in") and not isinstance(arg, list):
            raise ValueError(f"{where}: {op} takes a list")
        if op == "$contains" and not isinstance(arg, str):
            raise ValueError(f"{where}: $contains takes a string")
        if op == "$contains_any" and not (isinstance(arg, list) and arg and all(isinstance(a, str) for a in arg)):
            raise ValueError(f"{where}: $contains_any takes a non-empty list of strings")


def _check_values(values: Mapping[str, Any]) -> Mapping[str, Any]:
    for key, value in values.items():
        alternatives = str(key).split("|")
        if not key or any(not p.strip() for a in alternatives for p in a.split(".")):
            raise ValueError(f"bad field path {key!r} (dotted names, e.g. profile.address.city; a|b for either field)")
        _check_value(value, str(key))
    return values


class CountRange(_Model):
    """How many: ``min`` .. ``max`` inclusive; an integer N in a file means exactly N (``{min: N, max: N}``)."""

    min: int = Field(default=0, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("a count is an integer or {min: N, max: M}, not true/false")
        if isinstance(v, int):
            if v < 0:
                raise ValueError(f"a count is >= 0, got {v}")
            return {"min": v, "max": v}
        return v

    @model_validator(mode="after")
    def _min_below_max(self) -> CountRange:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def allows(self, n: int) -> bool:
        return n >= self.min and (self.max is None or n <= self.max)

    def describe(self) -> str:
        if self.max == self.min:
            return f"exactly {self.min}"
        if self.max is None:
            return f"at least {self.min}"
        return f"at most {self.max}" if self.min == 0 else f"{self.min} to {self.max}"


# ---------------------------------------------------------------------------
# Seed state
# ---------------------------------------------------------------------------


class Override(_Model):
    """One change to the seeded data before the conversation: exactly one of set / create / delete."""

    doc: str = Field(description="Document path: relative to customers/<customer>, or absolute.")
    set: dict[str, Any] | None = Field(default=None, description="Fields to update (dotted paths), merged.")
    create: dict[str, Any] | None = Field(default=None, description="The whole document (replaces any).")
    delete: bool = Field(default=False, description="Delete the document.")

    @field_validator("doc")
    @classmethod
    def _doc(cls, v: str) -> str:
        return _check_path(v, document=True)

    @model_validator(mode="after")
    def _one_action(self) -> Override:
        given = [name for name in ("set", "create") if getattr(self, name) is not None] + (["delete"] * self.delete)
        if len(given) != 1:
            raise ValueError(f"give exactly one of set / create / delete: true (got {given or 'none'})")
        for values in (self.set, self.create):
            for key, value in (values or {}).items():
                operator = isinstance(value, Mapping) and any(str(k).startswith("$") for k in value)
                if operator and (len(value) != 1 or next(iter(value)) not in TIME_OPERATORS):
                    raise ValueError(f"{key}: only {sorted(TIME_OPERATORS)} operators in overrides, got {value}")
        return self


class Seed(_Model):
    customers: list[str] = Field(
        default_factory=list, description="Other seeded customers to load as well (the rest of the business)."
    )
    absent: bool = Field(default=False, description="Do not write the scenario's customer (an unknown customer).")
    overrides: list[Override] = Field(default_factory=list)
    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the pack's policy (Pack.policy, nested): the world's help articles, the "
        "prompt's policy digests and the tools' verdicts all follow it.",
    )

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v:
            policy = load_pack(current_pack()).policy
            if policy is None:
                raise ValueError(f"pack {current_pack()!r} has no policy to override")
            try:
                policy.with_overrides(v)
            except ValueError as exc:  # the pack's policy error; it may list its problems
                problems = getattr(exc, "problems", None) or [str(exc)]
                raise ValueError("not a valid policy override: " + "; ".join(problems)) from None
        return v

    @field_validator("overrides")
    @classmethod
    def _no_articles(cls, v: list[Override]) -> list[Override]:
        bad = [i for i, o in enumerate(v) if o.doc.split("/", 1)[0] == "help_articles"]
        if bad:
            raise ValueError(
                f"overrides{bad}: help articles are rendered from the policy (the tools and the prompt read the "
                "policy, not these documents); change it with seed.policy (nested keys of the pack's policy)"
            )
        return v

    @field_validator("customers")
    @classmethod
    def _customers(cls, v: list[str]) -> list[str]:
        ids = load_pack(current_pack()).customer_id
        bad = [c for c in v if not ids.regex.fullmatch(c)]
        if bad:
            raise ValueError(f"customer ids look like {ids.example}, got {bad}")
        return v


# ---------------------------------------------------------------------------
# The user
# ---------------------------------------------------------------------------


class Rule(_Model):
    when_agent_says: list[str] = Field(min_length=1, description="Any of these in the agent's reply (any case).")
    say: str = Field(min_length=1)
    once: bool = Field(default=True, description="Use this rule at most once.")


class SimulatedUser(_Model):
    opening: str = Field(min_length=1, description="The user's first message.")
    rules: list[Rule] = Field(default_factory=list, description="First rule matching the agent's reply answers.")
    otherwise: str | None = Field(default=None, description="Said when no rule matches; none: the user stops.")
    stop_when_agent_says: list[str] = Field(default_factory=list)
    max_turns: int = Field(default=4, ge=1, le=12)


class TimedMessage(_Model):
    """One inbound message at a time of its own; the session stage decides which messages make a turn."""

    at: float = Field(ge=0, le=3600, description="Seconds after the conversation starts (arrival = send time).")
    text: str | None = Field(default=None, description="What the customer writes (a redelivery may omit it).")
    id: str | None = Field(default=None, description="Message id (default m-<index>); an id again is a redelivery.")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not _SEGMENT.match(v):
            raise ValueError(f"{v!r}: message ids are 1-128 of letters, digits and _.:@#-")
        return v


class User(_Model):
    turns: list[str] | None = Field(default=None, description="Scripted user messages, one per turn.")
    simulated: SimulatedUser | None = None
    messages: list[TimedMessage] | None = Field(
        default=None, description="Scripted messages with times: turns are made by the session stage's rules."
    )
    reply_after_s: float = Field(
        default=2.0, gt=0, le=600, description="With messages: simulated seconds from a turn's release to its reply."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> User:
        given = [n for n in ("turns", "simulated", "messages") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of turns (scripted) or simulated or messages (got {given or 'none'})")
        if self.turns is not None and (not self.turns or not all(t.strip() for t in self.turns)):
            raise ValueError("turns must be a non-empty list of non-blank messages")
        if self.messages is not None:
            self._check_messages(self.messages)
        elif self.reply_after_s != User.model_fields["reply_after_s"].default:  # a dump round-trips the default
            raise ValueError("reply_after_s goes with messages (timed), not turns or simulated")
        return self

    @staticmethod
    def _check_messages(messages: Sequence[TimedMessage]) -> None:
        if not messages:
            raise ValueError("messages must be a non-empty list")
        texts: dict[str, str] = {}
        for i, m in enumerate(messages):
            mid = m.id or f"{MESSAGE_ID_PREFIX}{i}"
            if mid in texts:
                if m.text is not None and m.text != texts[mid]:
                    raise ValueError(f"messages[{i}]: id {mid!r} again with another text (a redelivery repeats it)")
            elif m.text is None or not m.text.strip():
                raise ValueError(f"messages[{i}]: text is required (only a redelivery of an earlier id omits it)")
            else:
                texts[mid] = m.text
        times = [m.at for m in messages]
        if times != sorted(times):
            raise ValueError("messages must be sorted by their times (at)")

    @property
    def max_turns(self) -> int:
        if self.messages is not None:
            return len(self.messages)
        return len(self.turns) if self.turns is not None else self.simulated.max_turns  # type: ignore[union-attr]

    @property
    def scripted(self) -> list[str] | None:
        """The scripted texts, one per turn (turns), or one per distinct message (messages); None if simulated."""
        if self.messages is not None:
            return list(self.message_texts().values())
        return self.turns

    def message_texts(self) -> dict[str, str]:
        """Message id -> text of every message the user sends (turn i is m-<i>), in order."""
        if self.turns is not None:
            return {f"{MESSAGE_ID_PREFIX}{i}": t for i, t in enumerate(self.turns)}
        out: dict[str, str] = {}
        for i, m in enumerate(self.messages or ()):
            out.setdefault(m.id or f"{MESSAGE_ID_PREFIX}{i}", m.text or "")
        return out


# ---------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------


class StateCheck(_Model):
    """One end-state expectation: a document (``doc``) or the documents created in a collection (``created``)."""

    doc: str | None = None
    created: str | None = Field(default=None, description="Collection whose new documents are counted.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Dotted field path -> value or operator.")
    where: dict[str, Any] = Field(default_factory=dict, description="With created: only new documents matching.")
    count: CountRange | None = Field(
        default=None, description="With created: how many (N, or {min, max}; default: at least one)."
    )
    unchanged: bool = Field(default=False, description="With doc: exactly as before the conversation.")
    exists: bool = Field(default=True, description="With doc: false means it must not exist.")

    @model_validator(mode="after")
    def _shape(self) -> StateCheck:
        if (self.doc is None) == (self.created is None):
            raise ValueError("give exactly one of doc or created")
        if self.doc is not None:
            _check_path(self.doc, document=True)
            if self.where or self.count is not None:
                raise ValueError("where / count go with created, not doc")
            if self.unchanged and self.fields:
                raise ValueError("unchanged: true already fixes every field; drop fields")
        else:
            _check_path(self.created or "", document=False)
            if self.unchanged or not self.exists or self.fields:
                raise ValueError("with created use where / count (unchanged, exists, fields go with doc)")
        _check_values(self.fields)
        _check_values(self.where)
        return self


def _check_tool_args(name: str, args: Mapping[str, Any]) -> None:
    pack = load_pack(current_pack())
    spec = pack.tools_by_name.get(name)
    if spec is None:
        raise ValueError(f"unknown tool {name!r}; known: {', '.join(pack.tool_names)}")
    fields = set(tool_arguments(pack.name, name))
    extra = sorted(set(args) - fields)
    if extra:
        raise ValueError(f"{name} has no argument(s) {extra}; it takes {sorted(fields)}")
    for key, value in args.items():
        _check_value(value, f"args.{key}")


class ExpectedCall(_Model):
    name: str
    args: dict[str, Any] = Field(default_factory=dict, description="A subset of the call's arguments.")
    count: CountRange | None = Field(
        default=None,
        description="How many calls match (N, or {min, max}): checked as tool_counts; an entry with min 0 is "
        "optional in the trajectory.",
    )

    @model_validator(mode="after")
    def _known(self) -> ExpectedCall:
        _check_tool_args(self.name, self.args)
        return self


class ForbiddenCall(_Model):
    """A call that must not happen: by name, optionally only with matching arguments, beyond ``at_most`` calls."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict, description="Only calls whose arguments match this.")
    at_most: int = Field(default=0, ge=0, description="Calls allowed before it is a violation (default none).")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _known(self) -> ForbiddenCall:
        _check_tool_args(self.name, self.args)
        return self

    @property
    def any_call(self) -> bool:
        """Every call of the tool is forbidden (no argument filter, none allowed)."""
        return not self.args and self.at_most == 0


class ToolsExpectation(_Model):
    match: Literal["exact", "in_order", "any_order"] = "in_order"
    calls: list[ExpectedCall] = Field(default_factory=list)
    gate: bool = Field(default=True, description="A trajectory mismatch fails the trial (else: scored only).")

    @model_validator(mode="after")
    def _counts(self) -> ToolsExpectation:
        if self.match == "exact" and any(c.count is not None for c in self.calls):
            bad = [i for i, c in enumerate(self.calls) if c.count is not None]
            raise ValueError(f"calls{bad}.count: counts go with match in_order / any_order (exact fixes every call)")
        return self

    @property
    def sequence(self) -> list[ExpectedCall]:
        """The calls the trajectory is matched against (an entry whose count allows 0 is optional there)."""
        return [c for c in self.calls if c.count is None or c.count.min > 0]


class TextChecks(_Model):
    """Case-insensitive substrings of one text."""

    contains_all: list[str] = Field(default_factory=list)
    contains_any: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.contains_all or self.contains_any or self.not_contains)


class ReplyExpectation(TextChecks):
    """Checks on the agent's replies: the final one (default), any one of them, or every one."""

    which: Literal["final", "any", "all"] = Field(
        default="final", description="final: the last reply; any: at least one reply passes; all: every reply does."
    )


class FlagsExpectation(_Model):
    """Eval flags (``agents.steps.eval_flags``) over all turns."""

    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class HandoffRecordExpectation(_Model):
    """The hand-off record a human agent gets (``contract.handoff.Handoff``): reason, summary, messages it covers."""

    reason: list[Literal["user_request", "agent_request", "step_limit", "guardrail"]] | None = Field(
        default=None, description="Reason(s) allowed."
    )
    summary: TextChecks | None = Field(default=None, description="Substrings of the summary the human reads.")
    message_ids: list[str] | None = Field(
        default=None, description="Exactly these message ids (in any sequence); turn i of turns is m-<i>."
    )
    covers_all_messages: bool = Field(
        default=False, description="Every message the customer sent is covered by the conversation's records."
    )

    @field_validator("reason", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("summary")
    @classmethod
    def _summary(cls, v: TextChecks | None) -> TextChecks | None:
        if v is not None and v.empty:
            raise ValueError("give at least one of contains_all / contains_any / not_contains")
        return v


class Checks(_Model):
    """A group of checks; every one must pass. ``any_of`` / ``all_of`` nest further groups."""

    outcome: list[Literal["answered", "refused", "handoff", "error"]] | None = Field(
        default=None, description="Outcome(s) allowed for the final turn."
    )
    handoff: bool | None = Field(default=None, description="Whether the conversation should reach a human.")
    state: list[StateCheck] = Field(default_factory=list)
    tools: ToolsExpectation | None = None
    reply: ReplyExpectation | None = None
    flags: FlagsExpectation | None = None
    handoff_record: HandoffRecordExpectation | None = Field(
        default=None, description="The hand-off record (implies a hand-off happened)."
    )
    turns: CountRange | None = Field(default=None, description="How many turns the conversation had.")
    grounded: bool | None = Field(
        default=None,
        description="true: every reply was one of the four kinds (rendered from tool results, quoted from a "
        "retrieved article, a clarifying question, a hand-off) and none was degenerate (agents.grounding).",
    )
    any_of: list[Checks] = Field(default_factory=list, description="At least one of these groups passes.")
    all_of: list[Checks] = Field(default_factory=list, description="Every one of these groups passes.")

    @field_validator("outcome", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("any_of", "all_of")
    @classmethod
    def _groups(cls, v: list[Checks]) -> list[Checks]:
        empty = [i for i, g in enumerate(v) if g.empty]
        if empty:
            raise ValueError(f"group(s) {empty} have no checks")
        return v

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in Checks.model_fields if name != "handoff") and (
            self.handoff is None
        )

    def walk(self) -> Iterator[Checks]:
        """This group and every group nested in it."""
        yield self
        for group in (*self.any_of, *self.all_of):
            yield from group.walk()


class Expect(Checks):
    strict_state: bool = Field(default=True, description="Any data change not expected above fails the trial.")
    allowed_changes: list[str] = Field(
        default_factory=list,
        description="With strict_state: documents (collection/doc) or collections whose changes are not unexpected.",
    )
    strict_audit: bool = Field(
        default=False, description="With strict_state: audit records count as changes too (else they are exempt)."
    )

    @field_validator("allowed_changes")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        out = []
        for path in v:
            try:
                out.append(_check_path(path, document=True))
            except ValueError:
                out.append(_check_path(path, document=False))
        return out

    @model_validator(mode="after")
    def _strict(self) -> Expect:
        if not self.strict_state:
            bad = [n for n in ("allowed_changes", "strict_audit") if getattr(self, n)]
            if bad:
                raise ValueError(f"{', '.join(bad)}: only with strict_state: true (nothing is unexpected without it)")
        return self


class Forbid(_Model):
    tools: list[ForbiddenCall] = Field(
        default_factory=list,
        description="Calls that fail the trial (even denied): a tool name, or {name, args, at_most}.",
    )
    strings: list[str] = Field(default_factory=list, description="Never in an agent reply (case-insensitive).")
    flags: list[str] = Field(default_factory=list, description="Never raised on any turn.")
    other_customers_data: bool = Field(
        default=True, description="Ids, e-mails and phones of the seed.customers never in a reply."
    )


class Scenario(_Model):
    id: str = Field(description="Unique id: lower-case letters, digits, - and _.")
    category: str = Field(
        description=f"The pack's categories, or one of {', '.join(CATEGORIES)} (others are allowed and reported)."
    )
    title: str = ""
    customer: str = Field(description="The session's customer: a seeded id (the pack's customer id format).")
    seed: Seed = Field(default_factory=Seed)
    goal: str = Field(min_length=1, description="What the customer wants (the simulated user's instructions).")
    persona: str = ""
    user: User
    expect: Expect
    forbid: Forbid = Field(default_factory=Forbid)
    tags: list[str] = Field(default_factory=list)
    pack: str = Field(
        default_factory=current_pack,
        description="The business (tools.packs) whose tools and ids this scenario uses: the pack it was loaded for.",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r}: ids are 1-80 of a-z 0-9 - _, starting with a letter or digit")
        return v

    @field_validator("customer")
    @classmethod
    def _customer(cls, v: str) -> str:
        ids = load_pack(current_pack()).customer_id
        if not ids.regex.fullmatch(v):
            raise ValueError(f"{v!r} is not a customer id like {ids.example}")
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r}: categories are short lower-case names")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.pack != current_pack():
            raise ValueError(f"pack: this scenario is for pack {self.pack!r}, loaded for {current_pack()!r} (--pack)")
        if self.customer in self.seed.customers:
            raise ValueError(f"seed.customers repeats the scenario's own customer {self.customer}")
        banned = {f.name for f in self.forbid.tools if f.any_call}
        expected = {c.name for g in self.expect.walk() if g.tools for c in g.tools.calls if not c.count or c.count.min}
        both = sorted(expected & banned)
        if both:
            raise ValueError(f"forbid.tools: tools both expected and forbidden: {both}")
        self._check_message_ids()
        return self

    def _check_message_ids(self) -> None:
        known = self.user.message_texts()
        if self.user.simulated is not None:
            return  # a simulated user's messages are m-<turn>, unknown beforehand
        for group in self.expect.walk():
            record = group.handoff_record
            unknown = sorted(set(record.message_ids or ()) - set(known)) if record else []
            if unknown:
                raise ValueError(
                    f"expect.handoff_record.message_ids: unknown message id(s) {unknown}; the user sends {list(known)}"
                )

    @property
    def policy(self) -> Any:
        """The trial's policy: the pack's (``Pack.policy``) with ``seed.policy`` merged in."""
        policy = load_pack(self.pack).policy
        return policy.with_overrides(self.seed.policy) if self.seed.policy else policy

    @property
    def customers(self) -> tuple[str, ...]:
        """Every customer the scenario seeds: its own (unless absent) and the others."""
        own = () if self.seed.absent else (self.customer,)
        return (*own, *self.seed.customers)

    def absolute(self, path: str) -> str:
        """A scenario path made absolute (``tickets/X`` -> ``customers/<customer>/tickets/X``)."""
        path = path.strip("/")
        if path.split("/", 1)[0] in _ABSOLUTE_ROOTS:
            return path
        return f"customers/{self.customer}/{path}"


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _format_error(origin: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "missing":
            msg = "required key missing"
        out.append(f"{origin}: {loc}: {msg}" if loc else f"{origin}: {msg}")
    return out


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def _entries(data: Any) -> tuple[list[Any], str]:
    if isinstance(data, Mapping) and "scenarios" in data:
        extra = sorted(set(data) - {"scenarios"})
        if extra:
            raise ValueError(f"a file with 'scenarios' has no other top-level keys (got {extra})")
        if not isinstance(data["scenarios"], list):
            raise ValueError("'scenarios' must be a list of scenarios")
        return list(data["scenarios"]), "scenarios"
    if isinstance(data, Mapping):
        return [data], ""
    if isinstance(data, list):
        return list(data), ""
    raise ValueError("a scenario file holds a scenario (mapping), a list of them, or {scenarios: [...]}")


def parse_scenarios(data: Any, origin: str = "<data>", pack: str | None = None) -> tuple[list[Scenario], list[str]]:
    """(valid scenarios, problems) of one file's parsed content (for ``pack``, default the current one)."""
    if pack is not None:
        token = _PACK.set(pack)
        try:
            return parse_scenarios(data, origin)
        finally:
            _PACK.reset(token)
    try:
        entries, key = _entries(data)
    except ValueError as exc:
        return [], [f"{origin}: {exc}"]
    scenarios: list[Scenario] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        label = f"{key}[{i}]" if key or len(entries) > 1 else ""
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            label = f"{label} ({entry['id']})".strip()
        where = f"{origin}: {label}" if label else origin
        try:
            scenarios.append(Scenario.model_validate(entry))
        except ValidationError as exc:
            problems.extend(_format_error(where, exc))
    return scenarios, problems


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """The scenario files under ``paths`` (files as given, folders searched recursively), sorted."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in SCENARIO_SUFFIXES and p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise ScenarioError([f"{path}: no such file or folder"])
    return out


def load_scenarios(paths: Iterable[str | Path], *, ids: Iterable[str] = (), pack: str = DEFAULT_PACK) -> list[Scenario]:
    """Every scenario in ``paths`` (all validated against ``pack``'s tools and ids; ScenarioError lists every
    problem), optionally only ``ids``."""
    token = _PACK.set(pack)
    try:
        return _load_scenarios(paths, ids)
    finally:
        _PACK.reset(token)


def _load_scenarios(paths: Iterable[str | Path], ids: Iterable[str]) -> list[Scenario]:
    scenarios: list[Scenario] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    files = scenario_files(paths)
    if not files:
        raise ScenarioError([f"no scenario files ({', '.join(SCENARIO_SUFFIXES)}) in {list(map(str, paths))}"])
    for path in files:
        try:
            data = _parse(path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            problems.append(f"{path}: cannot parse: {exc}")
            continue
        found, bad = parse_scenarios(data, str(path))
        problems.extend(bad)
        for s in found:
            if s.id in seen:
                problems.append(f"{path}: duplicate scenario id {s.id!r} (also in {seen[s.id]})")
            seen[s.id] = str(path)
            scenarios.append(s)
    if problems:
        raise ScenarioError(problems)
    wanted = list(ids)
    if wanted:
        missing = [i for i in wanted if i not in seen]
        if missing:
            raise ScenarioError([f"no scenario with id {i!r}" for i in missing])
        scenarios = [s for s in scenarios if s.id in set(wanted)]
    return scenarios


def categories(pack: str = DEFAULT_PACK) -> tuple[str, ...]:
    """The categories of ``pack`` in report order: its own (``Pack.evals.categories``), then the shared ones."""
    own = tuple(getattr(load_pack(pack).evals, "categories", ()) or ())
    return own + tuple(c for c in CATEGORIES if c not in own)


def iter_categories(scenarios: Iterable[Scenario]) -> Iterator[str]:
    seen: dict[str, str] = {}
    for s in scenarios:
        seen.setdefault(s.category, s.pack)
    listed = categories(next(iter(seen.values()), DEFAULT_PACK))
    known = [c for c in listed if c in seen]
    yield from known + sorted(c for c in seen if c not in listed)
