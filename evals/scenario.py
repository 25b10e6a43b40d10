"""The offline eval scenario format: load, validate, explain what is wrong.

A scenario file (YAML or JSON) holds one scenario (a mapping with an ``id``) or
several (``scenarios: [...]``). The schema is the pydantic models below
(``Scenario.model_json_schema()`` prints it as JSON Schema); the README section
"Evals" documents it with an example. Validation is strict: unknown keys are
errors (a typo must not silently weaken a check), tool names and their
arguments are checked against the real tool registry, and every problem of a
file is reported at once with its location::

    evals/scenarios/refunds.yaml: scenarios[2] (refund-late-order): expect.tools.calls[0].name:
      unknown tool 'refund'; known: lookup_orders, get_shipment_status, ...

Relative document paths (``orders/O-C0001-05``) are under ``customers/<customer>``;
paths starting with ``customers/`` or ``help_articles/`` are absolute.
Timestamps in overrides may be ISO strings, YAML timestamps, or
``{$days_ago: N}`` / ``{$days_ahead: N}`` relative to ``stack.seed.REFERENCE_TIME``.
Field values in expectations are literals or one operator:
``{$exists: bool}``, ``{$in: [..]}``, ``{$ne: v}``, ``{$contains: "text"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tools.support import TOOL_NAMES, TOOLS_BY_NAME

SCENARIO_SUFFIXES = (".yaml", ".yml", ".json")
CATEGORIES: tuple[str, ...] = (
    "orders",
    "shipping",
    "returns",
    "refunds",
    "address",
    "account",
    "policy",
    "handoff",
    "adversarial",
)
OUTCOMES: tuple[str, ...] = ("answered", "refused", "handoff", "error")
MATCH_MODES: tuple[str, ...] = ("exact", "in_order", "any_order")
VALUE_OPERATORS: frozenset[str] = frozenset({"$exists", "$in", "$ne", "$contains"})
TIME_OPERATORS: frozenset[str] = frozenset({"$days_ago", "$days_ahead"})

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,79}$")
_CUSTOMER = re.compile(r"^C\d{4,}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@#-]{0,127}$")
_ABSOLUTE_ROOTS = ("customers", "help_articles")


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
        if op == "$in" and not isinstance(arg, list):
            raise ValueError(f"{where}: $in takes a list")
        if op == "$contains" and not isinstance(arg, str):
            raise ValueError(f"{where}: $contains takes a string")


def _check_values(values: Mapping[str, Any]) -> Mapping[str, Any]:
    for key, value in values.items():
        if not key or any(not p for p in str(key).split(".")):
            raise ValueError(f"bad field path {key!r} (dotted names, e.g. refund.state)")
        _check_value(value, str(key))
    return values


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
        default_factory=list, description="Other seeded customers to load as well (the rest of the shop)."
    )
    absent: bool = Field(default=False, description="Do not write the scenario's customer (an unknown customer).")
    overrides: list[Override] = Field(default_factory=list)

    @field_validator("customers")
    @classmethod
    def _customers(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not _CUSTOMER.match(c)]
        if bad:
            raise ValueError(f"customer ids look like C0001, got {bad}")
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


class User(_Model):
    turns: list[str] | None = Field(default=None, description="Scripted user messages, one per turn.")
    simulated: SimulatedUser | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> User:
        if (self.turns is None) == (self.simulated is None):
            raise ValueError("give exactly one of turns (scripted) or simulated")
        if self.turns is not None and (not self.turns or not all(t.strip() for t in self.turns)):
            raise ValueError("turns must be a non-empty list of non-blank messages")
        return self

    @property
    def max_turns(self) -> int:
        return len(self.turns) if self.turns is not None else self.simulated.max_turns  # type: ignore[union-attr]


# ---------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------


class StateCheck(_Model):
    """One end-state expectation: a document (``doc``) or the documents created in a collection (``created``)."""

    doc: str | None = None
    created: str | None = Field(default=None, description="Collection whose new documents are counted.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Dotted field path -> value or operator.")
    where: dict[str, Any] = Field(default_factory=dict, description="With created: only new documents matching.")
    count: int | None = Field(default=None, ge=0, description="With created: how many (default: at least one).")
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


class ExpectedCall(_Model):
    name: str
    args: dict[str, Any] = Field(default_factory=dict, description="A subset of the call's arguments.")

    @model_validator(mode="after")
    def _known(self) -> ExpectedCall:
        tool = TOOLS_BY_NAME.get(self.name)
        if tool is None:
            raise ValueError(f"unknown tool {self.name!r}; known: {', '.join(TOOL_NAMES)}")
        fields = set(getattr(tool.args_schema, "model_fields", {})) - {"scope"}
        extra = sorted(set(self.args) - fields)
        if extra:
            raise ValueError(f"{self.name} has no argument(s) {extra}; it takes {sorted(fields)}")
        return self


class ToolsExpectation(_Model):
    match: Literal["exact", "in_order", "any_order"] = "in_order"
    calls: list[ExpectedCall] = Field(default_factory=list)
    gate: bool = Field(default=True, description="A trajectory mismatch fails the trial (else: scored only).")


class ReplyExpectation(_Model):
    """Checks on the final agent reply (what the customer saw), case-insensitive substrings."""

    contains_all: list[str] = Field(default_factory=list)
    contains_any: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)


class FlagsExpectation(_Model):
    """Eval flags (``agents.steps.eval_flags``) over all turns."""

    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class Expect(_Model):
    outcome: list[Literal["answered", "refused", "handoff", "error"]] | None = Field(
        default=None, description="Outcome(s) allowed for the final turn."
    )
    handoff: bool | None = Field(default=None, description="Whether the conversation should reach a human.")
    state: list[StateCheck] = Field(default_factory=list)
    strict_state: bool = Field(default=True, description="Any data change not expected above fails the trial.")
    tools: ToolsExpectation | None = None
    reply: ReplyExpectation | None = None
    flags: FlagsExpectation | None = None

    @field_validator("outcome", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Forbid(_Model):
    tools: list[str] = Field(default_factory=list, description="Any call of these fails the trial (even denied).")
    strings: list[str] = Field(default_factory=list, description="Never in an agent reply (case-insensitive).")
    flags: list[str] = Field(default_factory=list, description="Never raised on any turn.")
    other_customers_data: bool = Field(
        default=True, description="Ids, e-mails and phones of the seed.customers never in a reply."
    )

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TOOLS_BY_NAME]
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown}; known: {', '.join(TOOL_NAMES)}")
        return v


class Scenario(_Model):
    id: str = Field(description="Unique id: lower-case letters, digits, - and _.")
    category: str = Field(description=f"One of {', '.join(CATEGORIES)} (others are allowed and reported).")
    title: str = ""
    customer: str = Field(description="The session's customer: a seeded id such as C0001.")
    seed: Seed = Field(default_factory=Seed)
    goal: str = Field(min_length=1, description="What the customer wants (the simulated user's instructions).")
    persona: str = ""
    user: User
    expect: Expect
    forbid: Forbid = Field(default_factory=Forbid)
    tags: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r}: ids are 1-80 of a-z 0-9 - _, starting with a letter or digit")
        return v

    @field_validator("customer")
    @classmethod
    def _customer(cls, v: str) -> str:
        if not _CUSTOMER.match(v):
            raise ValueError(f"{v!r} is not a customer id like C0001")
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r}: categories are short lower-case names")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.customer in self.seed.customers:
            raise ValueError(f"seed.customers repeats the scenario's own customer {self.customer}")
        tools = self.expect.tools
        if tools is not None:
            both = sorted({c.name for c in tools.calls} & set(self.forbid.tools))
            if both:
                raise ValueError(f"tools both expected and forbidden: {both}")
        return self

    @property
    def customers(self) -> tuple[str, ...]:
        """Every customer the scenario seeds: its own (unless absent) and the others."""
        own = () if self.seed.absent else (self.customer,)
        return (*own, *self.seed.customers)

    def absolute(self, path: str) -> str:
        """A scenario path made absolute (``orders/X`` -> ``customers/<customer>/orders/X``)."""
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


def parse_scenarios(data: Any, origin: str = "<data>") -> tuple[list[Scenario], list[str]]:
    """(valid scenarios, problems) of one file's parsed content."""
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


def load_scenarios(paths: Iterable[str | Path], *, ids: Iterable[str] = ()) -> list[Scenario]:
    """Every scenario in ``paths`` (all validated; ScenarioError lists every problem), optionally only ``ids``."""
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


def iter_categories(scenarios: Iterable[Scenario]) -> Iterator[str]:
    seen: dict[str, None] = {}
    for s in scenarios:
        seen.setdefault(s.category, None)
    known = [c for c in CATEGORIES if c in seen]
    yield from known + sorted(c for c in seen if c not in CATEGORIES)
