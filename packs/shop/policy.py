"""The shop's support policy as data: ``packs/shop/policies.yaml`` loaded into one typed, frozen ``ShopPolicy``.

Everything that states a policy derives from one ``ShopPolicy``:

- the help-centre articles (``ShopPolicy.articles()``: the tools serve them, ``packs.shop.seed`` writes them to
  Firestore as a projection for the help centre),
- the prompt's policy digests (``ShopPolicy.digests()``, ``agents.steps.policy_digests``),
- the tools' verdicts (``packs.shop.eligibility`` reads the parameters).

Which policy a turn uses travels with the turn: ``agents.steps.StepConfig.policy`` (default: the shipped
file) renders the prompt's digests, and the turn's ``ToolContext.policy`` (set from it) is what the tools
read, so the prompt and the tools can never see two different policies. An override is
``default_policy().with_overrides({...})``: a nested mapping merged over the document and validated again
(see docs/policies.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_POLICY_FILE = Path(__file__).resolve().with_name("policies.yaml")
FALLBACK_PLAN = "free"  # the label fee of a plan the policy does not list


class PolicyError(ValueError):
    """The policy document is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid policy:\n  " + "\n  ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Returns(_Section):
    window_days: int = Field(ge=0)
    label_fee: dict[str, float]
    non_returnable: dict[str, str] = {}
    non_returnable_once_opened: dict[str, str] = {}

    @model_validator(mode="after")
    def _fallback_plan(self) -> Returns:
        if FALLBACK_PLAN not in self.label_fee:
            raise ValueError(f"label_fee must list the {FALLBACK_PLAN!r} plan (the fee of unlisted plans)")
        if any(fee < 0 for fee in self.label_fee.values()):
            raise ValueError("label_fee values must be >= 0")
        return self

    def fee_for(self, plan: str | None) -> float:
        return self.label_fee.get(str(plan or "").lower(), self.label_fee[FALLBACK_PLAN])


class Refunds(_Section):
    issue_working_days: int = Field(ge=0)
    bank_days_min: int = Field(ge=0)
    bank_days_max: int = Field(ge=0)

    @property
    def issued_within(self) -> str:
        return f"{self.issue_working_days} working days"


class Delays(_Section):
    refund_after_days_late: int = Field(ge=0)


class DamagedItems(_Section):
    report_window_days: int = Field(ge=0)
    return_required: bool = False


class Warranty(_Section):
    electronics_years: int = Field(ge=0)
    other_years: int = Field(ge=0)


class Shipping(_Section):
    dispatch_working_days: int = Field(ge=0)
    standard_min_working_days: int = Field(ge=0)
    standard_max_working_days: int = Field(ge=0)
    plus_free_standard_over: float = Field(ge=0)


class Plans(_Section):
    plus_monthly: float = Field(ge=0)
    pro_monthly: float = Field(ge=0)
    payment_retry_days: int = Field(ge=0)


class Article(_Section):
    title: str = Field(min_length=1)
    tags: tuple[str, ...] = ()
    body: str = Field(min_length=1)
    triggers: str = ""  # space-separated words that select the digest
    digest: str | None = None

    @model_validator(mode="after")
    def _digest_needs_triggers(self) -> Article:
        if (self.digest is None) != (not self.triggers.strip()):
            raise ValueError("an article has both a digest and trigger words, or neither")
        return self


class Digest(BaseModel):
    """One prompt line: the digest of article ``slug``, offered when one of ``triggers`` is in the turn."""

    model_config = ConfigDict(frozen=True)

    slug: str
    triggers: frozenset[str]
    text: str


class _Template(string.Template):
    idpattern = r"[a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)*"  # ${returns.label_fee.free}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) else f"{value:.2f}"
    return str(value)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif not isinstance(value, list | tuple):
        out[prefix] = _text(value)


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


class ShopPolicy(BaseModel):
    """The whole policy document, validated; ``version`` names it in eval rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    returns: Returns
    refunds: Refunds
    delays: Delays
    damaged_items: DamagedItems
    warranty: Warranty
    shipping: Shipping
    plans: Plans
    articles: dict[str, Article]

    @model_validator(mode="after")
    def _texts_render(self) -> ShopPolicy:
        params = self.parameters()
        problems = []
        for slug, art in self.articles.items():
            for name, text in (("title", art.title), ("body", art.body), ("digest", art.digest)):
                try:
                    _Template(text or "").substitute(params)
                except (KeyError, ValueError) as exc:
                    problems.append(f"articles.{slug}.{name}: unknown or malformed placeholder {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- what the texts may name -------------------------------------------------

    def parameters(self) -> dict[str, str]:
        """Every placeholder a text may use: the sections' values (dotted names) and a few derived phrases."""
        return dict(self._parameters)

    @functools.cached_property
    def _parameters(self) -> dict[str, str]:
        out: dict[str, str] = {}
        _flatten("", self.model_dump(exclude={"version", "articles"}), out)
        free = [plan.capitalize() for plan, fee in self.returns.label_fee.items() if fee == 0]
        out["returns.free_label_plans"] = _and(free) if free else "no plan"
        names = [*self.returns.non_returnable.values(), *self.returns.non_returnable_once_opened.values()]
        out["returns.non_returnable_text"] = _and(names) if names else "Some items"
        out["damaged_items.return_text"] = (
            "send the damaged item back with the prepaid label we email"
            if self.damaged_items.return_required
            else "you do not need to return damaged goods unless we ask"
        )
        return out

    def render(self, text: str) -> str:
        return " ".join(_Template(text).substitute(self._parameters).split())

    # -- what derives from it ----------------------------------------------------

    def article(self, slug: str) -> dict[str, Any] | None:
        """Article ``slug`` rendered (title, body, tags, policy_version), or None if the policy has none."""
        art = self.articles.get(slug)
        if art is None:
            return None
        return {
            "title": self.render(art.title),
            "body": self.render(art.body),
            "tags": list(art.tags),
            "policy_version": self.version,
        }

    @functools.cached_property
    def _rendered(self) -> dict[str, dict[str, Any]]:
        return {slug: doc for slug in self.articles if (doc := self.article(slug)) is not None}

    def articles_rendered(self) -> dict[str, dict[str, Any]]:
        """Every article rendered, by slug (a fresh mapping; the documents are shared: do not change them)."""
        return dict(self._rendered)

    @functools.cached_property
    def digests(self) -> tuple[Digest, ...]:
        """The prompt's policy lines, in article order (rendered once per policy object)."""
        return tuple(
            Digest(slug=slug, triggers=frozenset(art.triggers.lower().split()), text=self.render(art.digest))
            for slug, art in self.articles.items()
            if art.digest
        )

    def non_returnable_label(self, skus: list[str]) -> str:
        names = [self.returns.non_returnable[s] for s in dict.fromkeys(skus) if s in self.returns.non_returnable]
        return _and(names) if names else "These items"

    # -- identity and overrides ----------------------------------------------------

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the whole document: two policies with the same fingerprint say the same thing."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def with_overrides(self, overrides: Mapping[str, Any]) -> ShopPolicy:
        """This policy with ``overrides`` (a nested mapping, e.g. ``{"returns": {"window_days": 14}}``) merged in.

        Mappings merge key by key, anything else replaces; the result is validated like the shipped file
        (``PolicyError`` lists every problem). Give a new ``version`` to tell the two apart in eval rows;
        without one the version becomes ``<old>+<fingerprint>``.
        """
        merged = _merge(self.model_dump(mode="python"), overrides)
        policy = parse_policy(merged)
        if "version" in overrides or policy.fingerprint == self.fingerprint:
            return policy
        return parse_policy({**merged, "version": f"{self.version}+{policy.fingerprint}"})

    def __hash__(self) -> int:  # the fields hold dicts; the content hash stands in
        return hash(self.fingerprint)

    def __reduce__(self) -> tuple[Any, ...]:
        # The shipped policy travels in every pickled AgentState: send it by name, not by value. This relies on
        # default_policy() being the shipped file on every machine (it never reads the environment).
        if self.fingerprint == default_policy().fingerprint:
            return (default_policy, ())
        return (parse_policy, (self.model_dump(mode="python"),))


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


def parse_policy(document: Mapping[str, Any]) -> ShopPolicy:
    """A validated ``ShopPolicy`` from a plain mapping (``PolicyError`` lists every problem at once)."""
    try:
        return ShopPolicy.model_validate(dict(document))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise PolicyError(problems) from None


def load_policy(path: str | Path) -> ShopPolicy:
    """A policy file (YAML, the layout of ``packs/shop/policies.yaml``)."""
    text = Path(path).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, Mapping):
        raise PolicyError([f"{path}: not a mapping"])
    return parse_policy(_keys_as_str(document))


def _keys_as_str(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _keys_as_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys_as_str(v) for v in value]
    return value


@functools.cache
def default_policy() -> ShopPolicy:
    """The shipped policy (``packs/shop/policies.yaml``), loaded once per process."""
    return load_policy(DEFAULT_POLICY_FILE)
