"""Guardrails around an agent turn: what the user sends in, and what the agent sends out.

Both checks are pure functions of text plus ``SessionFacts`` (what belongs to
this session's customer: ids, tracking numbers, contact data, values from this
turn's tool results, the prompt's own instructions, the actions the tools
really carried out). They are general mechanisms, not lists of known attacks:

Input (``check_input``), on the text normalised (NFKC, zero-width and bidi
controls removed, case-folded, whitespace collapsed):
- ``other_customer``: an identifier of the pack's formats (a customer id, or a
  record's id that embeds one) owned by another customer than the session's, or a request to
  look up / disclose data of a third party ("another customer's address",
  "all users' emails", "my neighbour's phone number").
- ``system_prompt``: asks to see or repeat the instructions / system prompt.
- ``prompt_injection``: instruction overrides ("ignore previous instructions"),
  role or chat-template markers (``<|im_start|>``, ``[INST]``, "system:" lines),
  mode switches ("developer mode"), tool-call or ``customer_id`` syntax.
- ``policy_exception``: asks to bend the policy ("make an exception", "waive
  the fee", "even though the window closed"), or claims staff authority.
The pack adds its own phrasings of the last two (``Pack.phrasing``) and names
its records (``Pack.record_nouns``: "their invoices").
- ``human_request``: asks for a person (not an attack: the turn hands off).
The first three refuse the turn, a policy exception gets a refusal that offers
a human, a human request hands off. Every category becomes a flag
``guard_in_<category>`` for the eval row.

Output (``check_output``):
- fails (the reply is replaced by a hand-off): another customer's identifiers
  (``guard_out_foreign_id``), a chunk of the system prompt's instructions
  (``guard_out_system_prompt``), secrets such as API keys, private keys or card
  numbers (``guard_out_secret``), and promises of an action no tool carried out
  in this turn: "your ticket has been opened" without a ticket opened
  (``guard_out_unbacked_promise``);
- redacts (and flags ``guard_out_redacted``): e-mail addresses and phone
  numbers that are not the customer's own;
- flags only: ids of the pack's formats that appear nowhere in the session
  (``guard_out_unknown_id``, a made-up reference).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.consent import term_pattern
from tools.packs import DEFAULT_PACK, load_pack
from tools.phrasing import participle

# ---------------------------------------------------------------------------
# Identifiers and facts
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdSpace:
    """The business's id formats and words in the checks' patterns, compiled once per pack (``id_space``)."""

    customer: re.Pattern[str]
    owned: tuple[tuple[re.Pattern[str], int], ...]  # ids that embed their owner's customer id (in that group)
    minted: tuple[re.Pattern[str], ...]  # references the tools mint: no owner inside, must come from this session
    action_words: Mapping[str, re.Pattern[str]]  # action -> the words that name it (promises are read by them)
    other_customer: tuple[re.Pattern[str], ...]  # asks for a third party's data (the pack's records in them)
    policy_exception: tuple[re.Pattern[str], ...]  # asks to bend the policy (the core's and the pack's own)
    commitment: re.Pattern[str]  # a sentence that says something is, or will be, done


@functools.lru_cache(maxsize=16)
def id_space(pack_name: str = DEFAULT_PACK) -> IdSpace:
    pack = load_pack(pack_name)
    said = pack.phrasing
    return IdSpace(
        customer=pack.customer_id.regex,
        owned=tuple((f.regex, f.owner_group) for f in pack.id_formats if f.owner_group),
        minted=tuple(f.regex for f in pack.id_formats if f.minted),
        action_words={
            a.name: re.compile("|".join(term_pattern(t).pattern for t in a.claim_words))
            for a in pack.actions.values()
            if a.claim_words
        },
        other_customer=_other_customer(pack.record_nouns) + tuple(re.compile(p) for p in said.third_party),
        policy_exception=POLICY_EXCEPTION + tuple(re.compile(p) for p in said.exceptions),
        commitment=_commitment(said.done_verbs, said.promised),
    )


EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
PHONE = re.compile(
    r"(?<![\w+-])(?:"
    r"(?:\+|00)\d[\d\s().-]{7,18}\d"  # international
    r"|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}"  # NANP
    r"|0\d{2,4}[\s-]\d{3,4}[\s-]?\d{3,4}"  # national, spaced
    r")(?![\w-])"
)
CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
SECRETS = (
    re.compile(r"AIza[0-9A-Za-z_-]{30,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(?:api[_ -]?key|secret[_ -]?key|password|passwd|access[_ -]?token)\s*[:=]\s*\S{6,}", re.I),
)


_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}|$)")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def flatten_values(value: Any) -> Iterable[str]:
    """Every scalar in a nested JSON-like value, as strings (booleans and None left out)."""
    if isinstance(value, Mapping):
        for v in value.values():
            yield from flatten_values(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from flatten_values(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


@dataclass(frozen=True)
class SessionFacts:
    """What belongs to the session's customer, for telling "theirs" from "someone else's"."""

    customer_id: str
    own_values: frozenset[str] = frozenset()  # any string value of the customer's context / tool results
    instructions: str = ""  # the prompt's static instructions (never to be echoed)
    done_actions: frozenset[str] = frozenset()  # the pack's action names carried out (ActionSpec.name)
    ids: IdSpace = field(default_factory=id_space, compare=False)
    _own_lower: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _own_digits: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        values = frozenset({self.customer_id, *self.own_values})
        object.__setattr__(self, "own_values", values)
        object.__setattr__(self, "_own_lower", frozenset(v.lower() for v in values))
        digits = {_digits(v) for v in values if not _TIMESTAMP.match(v)}  # a date's digits are no phone
        object.__setattr__(self, "_own_digits", tuple(sorted(d for d in digits if len(d) >= 6)))

    def owns_text(self, value: str) -> bool:
        low = value.lower()
        return low in self._own_lower or any(low in v for v in self._own_lower if len(low) >= 6)

    def owns_number(self, value: str) -> bool:
        d = _digits(value)
        return bool(d) and any(d in own for own in self._own_digits)

    def is_own_customer(self, cid: str) -> bool:
        return cid.upper() == self.customer_id.upper()


def facts_from_context(
    customer_id: str,
    context: Mapping[str, Any] | None,
    *,
    instructions: str = "",
    extra_values: Iterable[Any] = (),
    done_actions: Iterable[str] = (),
    pack: str = DEFAULT_PACK,
) -> SessionFacts:
    """Facts from the enrichment context (profile, the customer's records) plus extra values (tool results)."""
    ctx = dict(context or {})
    if ctx.get("customer_id") not in (None, customer_id):
        ctx = {}  # another customer's context is never "own"
    values = set(flatten_values(ctx)) | set(flatten_values(list(extra_values)))
    return SessionFacts(customer_id, frozenset(values), instructions, frozenset(done_actions), id_space(pack))


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------

_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u02bc": "'"})


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text).translate(_QUOTES).casefold()
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def _any(patterns: Iterable[re.Pattern[str]], text: str) -> bool:
    return any(p.search(text) for p in patterns)


_C = r"[^.?!\n]"  # within one sentence
_THIRD_PARTY = (
    r"(?:another|other|different|(?:some|any) ?(?:one|body) else'?s?|other people'?s?|all|every|each|the other)"
    r"\s+(?:customers?|users?|clients?|accounts?|members?|shoppers?|buyers?|people|persons?)(?:'s?)?"
    r"|(?:some|any) ?(?:one|body) else'?s?|other people'?s?"
    r"|(?:my|a|the|this)\s+(?:wife|husband|partner|friend|neighbou?r|colleague|co-?worker|boss|ex|mother|mom|mum|"
    r"father|dad|son|daughter|brother|sister|room-?mate|flat-?mate|landlord|tenant)'?s?"
    r"|(?:mr|mrs|ms|miss|dr)\.?\s+[a-z]+'?s?|customer\s+(?:named|called)\s+\w+"
)


def _other_customer(records: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """Asking for a third party's data, the pack's records ("their <record> history", "<records> of others")."""
    history = "".join(f"|{re.escape(r)} history" for r in records)
    many = "".join(f"|{re.escape(r)}s" for r in records)
    some = "".join(f"|{re.escape(r)}s?" for r in records)
    private = (
        r"(?:home |delivery |billing |e-?mail |postal )?address(?:es)?|e-?mails?|phone(?: numbers?)?|"
        r"(?:mobile|cell|telephone) numbers?|account(?: details| info(?:rmation)?)?|card(?: details| numbers?)?|"
        rf"passwords?|purchase history{history}{many}|details|personal (?:data|info(?:rmation)?)|info(?:rmation)?"
    )
    return tuple(
        re.compile(p)
        for p in (
            rf"\b(?:{_THIRD_PARTY})\s+(?:[\w'-]+\s+){{0,2}}(?:{private})\b",
            rf"\b(?:{private})\b{_C}{{0,25}}\b(?:of|for|belonging to|from|on)\s+(?:{_THIRD_PARTY})\b",
            r"\b(?:his|her|their)\s+(?:home |delivery |e-?mail )?(?:address|e-?mail|phone(?: number)?|card details|"
            rf"password|purchase history{history}|personal details)\b",
            r"\b(?:list|show|give|export|dump|send|print)\b[^.?!\n]{0,15}\b(?:all|every|the whole)\s+(?:the\s+)?"
            r"(?:customers?|users?|accounts?|clients?|database|customer (?:list|data|records))\b",
            r"\bwho (?:else )?(?:lives at|bought|purchased|owns)\b",
            rf"\b(?:look ?up|find|search|check|access|open|pull up|read)\b[^.?!\n]{{0,20}}\b(?:account{some}|details)"
            r"\s+(?:of|for|belonging to)\s+"
            r"(?:customer|user|client|someone|somebody|another|a different|mr|mrs|ms|dr)\b",
        )
    )


SYSTEM_PROMPT = tuple(
    re.compile(p)
    for p in (
        r"\b(?:system|initial|original|hidden|secret|internal|developer|pre-?)\s*(?:prompt|instructions?|message)\b",
        r"\b(?:hidden|secret|internal)\s+(?:rules|guidelines|configuration|policies)\b",
        rf"\b(?:show|reveal|print|repeat|tell|give|share|display|output|dump|leak|paste|list|recite|quote|copy|"
        rf"write out|what are|what's|what is|what were)\b{_C}{{0,30}}\byour\b{_C}{{0,15}}"
        rf"\b(?:instructions|prompt|directives|configuration|programming|guidelines|rules)\b",
        r"\b(?:repeat|print|output|recite|copy|echo)\b[^.?!\n]{0,40}\b(?:above|before this|verbatim|word for word|"
        r"everything you (?:were|have been) (?:told|given))\b",
        r"\bwhat (?:were|are|was|have) you (?:been )?(?:told|instructed|programmed|prompted)"
        r"(?:\s+(?:before|initially|at the start|to do|to say|by)\b|\s*[?.!]*$)",
        r"\bhow (?:were|are|have) you (?:been )?(?:programmed|configured|prompted|instructed)\b",
        r"\b(?:beginning|start) of (?:the|this|your) (?:conversation|prompt|context)\b",
    )
)
PROMPT_INJECTION = tuple(
    re.compile(p, re.MULTILINE)
    for p in (
        rf"\b(?:ignore|disregard|forget|override|bypass|drop|abandon|stop following)\b{_C}{{0,40}}"
        rf"\b(?:instructions?|prompts?|rules|guidelines|directives|guardrails|programming|restrictions|constraints|"
        rf"safeguards|filters)\b",
        r"\byou are (?:now|no longer)\b",
        r"\bfrom now on,? you\b",
        r"\b(?:pretend|imagine|role-?play|act|behave)\b[^.?!\n]{0,20}\b(?:as|like|to be|you are|you're)\s+(?:an?\s+)?"
        r"(?:admin|administrator|developer|system|root|unrestricted|jailbroken|different|evil|dan|superuser|"
        r"support manager|employee)\b",
        r"\b(?:developer|debug|admin|god|sudo|maintenance|unrestricted|jailbreak|dan|test) mode\b",
        r"\bjailbr(?:eak|oken)\b",
        r"\bdo anything now\b",
        r"<\|?\s*/?\s*(?:im_start|im_end|system|endoftext|assistant|user|tool)\s*\|?>",
        r"\[/?(?:inst|sys|system)\]|<</?sys>>",
        r"^\s*(?:#{1,6}\s*)?(?:system|assistant|developer|tool)\s*(?:message|prompt|note)?\s*:",
        r"\b(?:new|updated|real|actual|hidden|additional|admin) (?:instructions?|system prompt|rules)\s*:",
        r"\bbegin (?:system|admin|developer|new) (?:prompt|instructions?|message|mode)\b",
        r"\b(?:function_call|tool_calls?|tool_code|tool_use)\b",
        r"[\"']?customer[_ ]?id[\"']?\s*[:=]",
        r"\b(?:set|change|switch|use|with)\s+(?:the\s+|my\s+|a\s+)?customer[ _-]?id\b",
        r"\b(?:as|with) (?:admin|root|system|elevated|superuser) (?:privileges|access|rights|permissions)\b",
        r"\bsudo\b",
    )
)
POLICY_EXCEPTION = tuple(
    re.compile(p)
    for p in (
        r"\b(?:make|grant|give|do|allow)\b[^.?!\n]{0,20}\bexception\b",
        rf"\b(?:bypass|override|ignore|waive|skip|break|bend|circumvent|get around|work around|set aside|forget)\b"
        rf"{_C}{{0,25}}\b(?:polic(?:y|ies)|rules?|window|limits?|fees?|deadlines?|requirements?|30[- ]day)\b",
        rf"\beven (?:though|if|after|when|tho)\b{_C}{{0,60}}\b(?:window|policy|expired|closed|past|over|days? ago|"
        rf"weeks? ago|months? ago|used|opened|worn|broke it|not eligible|ineligible|outside)\b",
        rf"\b(?:money back|approve|process|reimburse)\w*\b{_C}{{0,50}}"
        rf"\b(?:anyway|anyways|regardless|no matter what|all the same|whatever the policy|policy or not)\b",
        rf"\bi(?:'m| am)\s+(?:a|an|the|your)\s+(?:store |support |customer service )?(?:manager|admin|administrator|"
        rf"employee|staff(?: member)?|supervisor|developer|engineer|ceo|owner|founder|agent)\b{_C}{{0,60}}"
        rf"\b(?:approve|authori[sz]e|override|access|grant|unlock|bypass|process|exception|allowed|"
        rf"permission|instruct|let me|need you to|give me)",
        r"\b(?:authori[sz]ed|approved|cleared|signed off)\s+by\s+(?:your|the|a|an|my)\s+(?:\w+\s+)?(?:manager|"
        r"supervisor|ceo|boss|team|agent|colleague|staff)\b",
        r"\b(?:manager|supervisor|agent|colleague|someone from support)\s+(?:already\s+)?(?:said|told me|promised|"
        r"approved|authori[sz]ed|agreed)\b",
        r"\bmore than (?:i|what i) paid\b",
    )
)
HUMAN_REQUEST = tuple(
    re.compile(p)
    for p in (
        rf"\b(?:speak|talk|chat|connect|transfer|put|pass|get|escalate|hand)\b{_C}{{0,25}}\b(?:human|real person|"
        rf"person|representative|rep|operator|live agent|human agent|real agent|support agent|someone real|"
        rf"actual person|staff member)\b",
        rf"\b(?:want|need|like|request|give me|get me)\b{_C}{{0,15}}\b(?:a |an |to )?(?:human|real person|"
        rf"live agent|human agent|representative|operator)\b",
        r"^\s*(?:human|agent|representative|operator|real person)(?: please)?\s*[.!]*\s*$",
    )
)


# The core's neutral wording; a pack words its own through ``Pack.texts`` (keys ``refusal_<key>``).
REFUSAL_OTHER_CUSTOMER = (
    "I can only help with your own account, so I can't look up or share anyone else's information. "
    "Is there anything about your own account I can help with?"
)
REFUSAL_INSTRUCTIONS = "I can't share or change how I'm set up, but I'm happy to help with your account."
REFUSAL_POLICY = (
    "I'm not able to make exceptions to our policies. I can check what you are eligible for, or connect "
    "you with a human agent who can review your case."
)
REFUSALS: Mapping[str, str] = {
    "other_customer": REFUSAL_OTHER_CUSTOMER,
    "instructions": REFUSAL_INSTRUCTIONS,
    "policy": REFUSAL_POLICY,
}
HANDOFF_REQUESTED = (
    "Of course. I'm connecting you with a human agent now; they will see this conversation and reply here."
)


@dataclass(frozen=True)
class InputVerdict:
    action: Literal["allow", "refuse", "handoff"]
    categories: tuple[str, ...] = ()
    reply: str = ""

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(f"guard_in_{c}" for c in self.categories)

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


def foreign_ids(text: str, facts: SessionFacts) -> list[str]:
    """Customer ids, and ids that embed one, in ``text`` that belong to another customer than the session's."""
    found = [m.group(0) for m in facts.ids.customer.finditer(text) if not facts.is_own_customer(m.group(0))]
    for pattern, group in facts.ids.owned:
        found += [m.group(0) for m in pattern.finditer(text) if not facts.is_own_customer(m.group(group))]
    return found


def input_categories(text: str, facts: SessionFacts) -> tuple[str, ...]:
    """Every category the user's text falls in (order: most serious first)."""
    norm = normalize(text)
    out: list[str] = []
    if foreign_ids(text, facts) or foreign_ids(norm.upper(), facts) or _any(facts.ids.other_customer, norm):
        out.append("other_customer")
    if _any(SYSTEM_PROMPT, norm):
        out.append("system_prompt")
    if _any(PROMPT_INJECTION, norm):
        out.append("prompt_injection")
    if _any(facts.ids.policy_exception, norm):
        out.append("policy_exception")
    if _any(HUMAN_REQUEST, norm):
        out.append("human_request")
    return tuple(out)


def check_input(text: str, facts: SessionFacts, texts: Mapping[str, str] | None = None) -> InputVerdict:
    """Refuse, hand off, or allow the turn; ``categories`` are all that matched (for flags).

    ``texts``: the pack's own wording (``Pack.texts``); a refusal it does not word reads as ``REFUSALS``.
    """
    texts = texts or {}

    def refuse(key: str) -> InputVerdict:
        return InputVerdict("refuse", cats, texts.get(f"refusal_{key}") or REFUSALS[key])

    cats = input_categories(text, facts)
    if "other_customer" in cats:
        return refuse("other_customer")
    if "system_prompt" in cats or "prompt_injection" in cats:
        return refuse("instructions")
    if "human_request" in cats:
        return InputVerdict("handoff", cats, HANDOFF_REQUESTED)
    if "policy_exception" in cats:
        return refuse("policy")
    return InputVerdict("allow", cats)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

SAFE_HANDOFF_TEXT = (
    "I'm sorry, I can't complete that reply myself. I'm passing this conversation to a human agent, "
    "who will follow up here shortly."
)
REDACTED_EMAIL = "[email removed]"
REDACTED_PHONE = "[phone number removed]"
SHINGLE_WORDS = 7

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_NON_COMMITTAL = re.compile(
    r"\b(?:not|never|cannot|can't|cant|unable|won't|no longer|if|once|when|after|unless|would|could|can|may|might|"
    r"should|whether)\b|n't\b"
)
_DONE = (
    "issued|processed|approved|initiated|started|arranged|credited|sent|submitted|requested|put through|set up|"
    "cancell?ed|changed|updated|opened|created|raised|logged|emailed|booked"
)


def _commitment(verbs: tuple[str, ...], promised: tuple[str, ...]) -> re.Pattern[str]:
    """A sentence that says something is, or will be, done; the pack adds its own verbs and what it promises."""
    done = "".join(f"|{re.escape(participle(v))}" for v in verbs)
    base = "".join(f"|{re.escape(v)}" for v in verbs)
    things = "".join(f"|{re.escape(t)}" for t in promised)
    return re.compile(
        rf"\b(?:i|we)\s*(?:'ve|'ll|have|has|will|am|are|just|already|now|gone ahead and|went ahead and)?\s*"
        rf"(?:\w+\s+)?(?:{_DONE}{done}{base}|issue|process|cancel|change|update)\b"
        r"|\b(?:has|have|had) been\s+(?:\w+\s+)?(?:issued|processed|approved|initiated|started|sent|credited|"
        rf"submitted|requested|cancell?ed|changed|updated|opened|created|raised|logged|emailed|arranged{done})\b"
        r"|\b(?:is|are) (?:being processed|on (?:its|the) way|approved|confirmed|now (?:cancell?ed|changed|updated|"
        r"open))\b"
        rf"|\bwill (?:be )?(?:issued|processed|credited|cancell?ed|changed|updated{done})\b"
        rf"|\byou(?:'ll| will) (?:receive|get|see) (?:a |your |the )?(?:full )?(?:money{things})\b"
    )


@dataclass(frozen=True)
class OutputVerdict:
    ok: bool
    text: str  # the reply to send: redacted if ok, the safe hand-off text if not
    categories: tuple[str, ...] = ()
    redactions: int = 0

    @property
    def flags(self) -> tuple[str, ...]:
        out = [f"guard_out_{c}" for c in self.categories]
        if self.redactions:
            out.append("guard_out_redacted")
        return tuple(out)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", normalize(text))


def _shingles(words: list[str], n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def leaks_instructions(text: str, instructions: str, n: int = SHINGLE_WORDS) -> bool:
    """True if ``text`` repeats ``n`` consecutive words of the prompt's instructions."""
    if not instructions:
        return False
    return bool(_shingles(_words(text), n) & _shingles(_words(instructions), n))


def unbacked_promises(text: str, done_actions: Iterable[str], ids: IdSpace | None = None) -> list[str]:
    """Action kinds the reply claims (done or committed) that no tool carried out in this turn."""
    ids = ids or id_space()
    words = ids.action_words
    done = set(done_actions)
    out: list[str] = []
    for sentence in _SENTENCE.findall(normalize(text)):
        s = sentence.strip()
        if not s or s.endswith("?") or _NON_COMMITTAL.search(s) or not ids.commitment.search(s):
            continue
        kinds = [k for k, p in words.items() if p.search(s)]
        if kinds and not done.intersection(kinds):
            out.extend(k for k in kinds if k not in out)
    return out


def _luhn(number: str) -> bool:
    digits = [int(d) for d in number][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _has_secret(text: str, facts: SessionFacts) -> bool:
    if any(p.search(text) for p in SECRETS):
        return True
    for m in CARD.finditer(text):
        number = _digits(m.group(0))
        if 13 <= len(number) <= 19 and _luhn(number) and not facts.owns_number(number):
            return True
    return False


def redact(text: str, facts: SessionFacts) -> tuple[str, int]:
    """Text with e-mails and phone numbers that are not the customer's own replaced; (text, count)."""
    count = 0

    def email(m: re.Match[str]) -> str:
        nonlocal count
        if facts.owns_text(m.group(0)):
            return m.group(0)
        count += 1
        return REDACTED_EMAIL

    def phone(m: re.Match[str]) -> str:
        nonlocal count
        digits = _digits(m.group(0))
        if len(digits) < 9 or facts.owns_number(digits):
            return m.group(0)
        count += 1
        return REDACTED_PHONE

    text = EMAIL.sub(email, text)
    text = PHONE.sub(phone, text)
    return text, count


def unknown_ids(text: str, facts: SessionFacts) -> list[str]:
    """Ids of the pack's formats that belong to this customer's id space but appear nowhere in the session."""
    out = []
    for pattern, group in facts.ids.owned:
        out += [m.group(0) for m in pattern.finditer(text) if facts.is_own_customer(m.group(group))]
    for pattern in facts.ids.minted:
        out += [m.group(0) for m in pattern.finditer(text)]
    return [i for i in out if not facts.owns_text(i)]


def check_output(text: str, facts: SessionFacts) -> OutputVerdict:
    """Pass (possibly redacted) or fail (replaced by ``SAFE_HANDOFF_TEXT``) the agent's reply."""
    cats: list[str] = []
    if foreign_ids(text, facts):
        cats.append("foreign_id")
    if leaks_instructions(text, facts.instructions):
        cats.append("system_prompt")
    if _has_secret(text, facts):
        cats.append("secret")
    if unbacked_promises(text, facts.done_actions, facts.ids):
        cats.append("unbacked_promise")
    if cats:
        return OutputVerdict(False, SAFE_HANDOFF_TEXT, tuple(cats))
    redacted, count = redact(text, facts)
    if unknown_ids(redacted, facts):
        cats.append("unknown_id")
    return OutputVerdict(True, redacted, tuple(cats), count)


def instructions_of(template_text: str) -> str:
    """The static instruction text of a prompt template: every line without a ``$`` placeholder."""
    return "\n".join(line for line in template_text.splitlines() if "$" not in line and line.strip())
