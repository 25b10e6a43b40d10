"""How a turn ends, whichever protocol ran it: a checked reply, a hand-off to a person, or an error.

Both protocols finish through here, so a reply passes the same checks whether a native model wrote it,
a constrained model wrote it, or it was rendered from tool results, a help article or the pack's texts:
model-written text first passes the degenerate-output and grounding checks (``agents.grounding``; a
failing reply is replaced by a grounded one and flagged), then every reply the output guardrails (a
failing reply becomes a hand-off). Every finished state has ``asked`` cleared: it asks for nothing more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

from agents import conversation, grounding, guardrails, replies, retrieval
from agents.model_io import ModelResponse
from agents.model_text import ERROR_TEXT, FALLBACK_TEXT, FLAG_EMPTY_FALLBACK, FLAG_TRUNCATED, reply_text
from agents.state import TOOL_MODE_NONE, AgentState, Awaiting, Outcome, merge, session_facts, tool_results
from contract.handoff import Handoff

FLAG_GROUNDED = "grounded"  # model-written text passed the grounding check (agents.grounding)
FLAG_UNGROUNDED = "ungrounded"  # model-written text stated what no source gave: replaced by a grounded reply
FLAG_DEGENERATE = "degenerate_output"  # model-written text looped: replaced
# Small talk (a chat route's own words: no tool, no passage) whose first sentences state nothing unsourced: those
# sentences are the reply and the rest is dropped (better than a clarifying question after "thanks, that's all",
# and the very text the releaser showed); flagged with ``ungrounded``.
FLAG_GROUNDED_LEAD = "grounded_lead_kept"
# Every reply is one of these kinds (the eval row's flag reply_<kind>): rendered from tool results or the
# pack's texts, an answer quoted from a retrieved article passage, a clarifying question, a hand-off.
REPLY_KINDS = ("rendered", "article", "clarify", "handoff")

HANDOFF_TEXTS: Mapping[str, str] = {
    "user_request": guardrails.HANDOFF_REQUESTED,
    "agent_request": "I'm connecting you with a human agent who can help further; they will reply here shortly.",
    "step_limit": (
        "I couldn't finish this on my own, so I'm passing your conversation to a human agent who will follow up here."
    ),
    "guardrail": guardrails.SAFE_HANDOFF_TEXT,
}


def finish_with_text(state: AgentState, response: ModelResponse, kind: str = "") -> AgentState:
    """Finish with ``response``'s text: rendered (``kind`` given) or written by the model (``kind`` "")."""
    state = replace(state, asked=None)
    flags = [FLAG_TRUNCATED] if response.finish_reason == "length" else []
    text = reply_text(response)
    if not text:
        flags.append(FLAG_EMPTY_FALLBACK)
        text, kind = FALLBACK_TEXT, "clarify"
    elif not kind:
        # The guardrails read what the model wrote before anything replaces it: a leak hands off either way.
        verdict = guardrails.check_output(text, session_facts(state))
        flags.extend(verdict.flags)
        if verdict.ok and (state.config.tool_mode == TOOL_MODE_NONE or not state.config.tools):
            # No model writes here: the instant stub's acknowledgement is code, measuring the pipeline's own
            # overhead (not an agent, agents/backends/registry.py); only the guardrails read it.
            text, kind = verdict.text, "rendered"
        elif verdict.ok:
            text, kind, checked = _checked_model_text(state, verdict.text)
            flags.extend(checked)
    if state.notes and kind == "rendered":
        text = " ".join((*state.notes, text))
    verdict = guardrails.check_output(text, session_facts(state)) if kind else verdict
    state = replace(state, flags=merge(state.flags, [*flags, *verdict.flags]))
    if not verdict.ok:
        return handoff(state, "guardrail", summary="The agent's reply failed the output checks: " + ", ".join(
            verdict.categories))  # fmt: skip
    return replace(
        state, outcome=Outcome.ANSWERED, reply_text=verdict.text, flags=merge(state.flags, [f"reply_{kind}"])
    )


def finish_rendered(state: AgentState, response: ModelResponse, text: str, kind: str = "rendered") -> AgentState:
    """Finish with ``text`` written by the agent's code (tool results, an article, the pack's texts), not the model."""
    return finish_with_text(state, replace(response, text=text, finish_reason="stop"), kind)


def join_replies(state: AgentState, earlier: Sequence[str]) -> AgentState:
    """A turn that answered several requests one by one: the earlier ones' replies, then this one's, as one reply.

    Each reply passed the checks on its own; the joined text passes the output guardrails once more. A
    hand-off keeps its record and says what was answered before it; an error is the apology alone.
    """
    if not earlier or state.outcome not in (Outcome.ANSWERED, Outcome.HANDOFF):
        return state
    text = "\n".join(dict.fromkeys((*earlier, state.reply_text)))
    verdict = guardrails.check_output(text, session_facts(state))
    state = replace(state, flags=merge(state.flags, verdict.flags))
    if verdict.ok:
        return replace(state, reply_text=verdict.text)
    if state.outcome == Outcome.HANDOFF:
        return state
    return handoff(state, "guardrail", summary="The agent's reply failed the output checks: " + ", ".join(
        verdict.categories))  # fmt: skip


def say(state: AgentState, response: ModelResponse, key: str) -> AgentState:
    """One of the pack's conversational replies (``agents.conversation``): a greeting, a closing, a question."""
    # A closing is the pack's text; the others ask what the customer needs, naming what the agent can help with.
    kind = "rendered" if key == "closing" else "clarify"
    return finish_rendered(state, response, conversation.say(state.pack, key), kind)


def grounding_sources(state: AgentState) -> list[str]:
    """What a model-written reply may state: the prompt (account facts, policy lines), tool results, passages."""
    out = [m.content for m in state.messages if m.role in ("system", "tool", "user")]
    out += [f"{h.passage.title} {h.passage.text}" for h in state.passages]
    out += list(state.tool_values)
    return out


def _grounded_reply(state: AgentState) -> tuple[str, str]:
    """(text, kind) to send instead of a model reply that failed a check: results, a passage, or a question."""
    results = tool_results(state)
    if results:
        return replies.render(state.pack, results), "rendered"
    if state.passages:
        return retrieval.answer_text(state.passages), "article"
    return conversation.say(state.pack, "clarify"), "clarify"


def _checked_model_text(state: AgentState, text: str) -> tuple[str, str, list[str]]:
    if grounding.degenerate(text):
        return (*_grounded_reply(state), [FLAG_DEGENERATE])
    verdict = grounding.check(text, grounding_sources(state))
    if not verdict.grounded:
        lead = grounding.grounded_lead(text, verdict)
        if lead and state.awaiting == Awaiting.TEXT and not tool_results(state) and not state.passages:
            return lead, "rendered", [FLAG_UNGROUNDED, FLAG_GROUNDED_LEAD]
        return (*_grounded_reply(state), [FLAG_UNGROUNDED])
    return text, "article" if state.passages and not tool_results(state) else "rendered", [FLAG_GROUNDED]


def handoff(state: AgentState, reason: str, *, summary: str = "", handoff_id: str | None = None) -> AgentState:
    """Hand the turn to a person: the record for the hand-off topic (summary redacted), and the reply that says so."""
    turn = state.enriched.turn
    facts = session_facts(state)
    clean_summary, _ = guardrails.redact(summary[:500], facts)
    if guardrails.foreign_ids(clean_summary, facts):
        clean_summary = f"Hand-off ({reason})."
    record = Handoff(
        handoff_id=handoff_id or "H-" + hashlib.sha256(turn.turn_id.encode()).hexdigest()[:12].upper(),
        reason=reason,
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        customer_id=turn.customer_id,
        message_ids=tuple(turn.message_ids),
        summary=clean_summary,
        flags=state.flags,
        tools_used=tuple(dict.fromkeys(c.name for c in state.tool_calls)),
    )
    flags = merge(state.flags, [f"handoff_{reason}", "reply_handoff"])
    return replace(
        state, outcome=Outcome.HANDOFF, reply_text=HANDOFF_TEXTS[reason], handoff=replace(record, flags=flags),
        flags=flags, asked=None,
    )  # fmt: skip


def error(state: AgentState, reason: str, flag: str) -> AgentState:
    """The turn failed (the backend, the context): an apology to the customer, the reason for the dead letter."""
    return replace(
        state,
        outcome=Outcome.ERROR,
        reply_text=ERROR_TEXT,
        error=reason[:1000],
        flags=merge(state.flags, [flag]),
        asked=None,
    )
