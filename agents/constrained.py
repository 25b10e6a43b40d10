"""The constrained step protocol: models without native tool calls, one JSON decision per step.

Every model step's output is one decision (``agents.protocol``): a call of one declared tool with
arguments valid against its narrowed schema (``agents.narrowing``), a hand-off (a call of the pack's
hand-off tool), or a reply. A prompt version with a routes file has a router (``agents.router``): the
turn's first step is routing, by nearest neighbour over the model's own embeddings, and then only the
routed tool's arguments are decoded (nothing is, when the narrowed schema leaves one value). Other
versions let the model choose among all tools under the constraint. After tool results the reply is
rendered from them (``agents.replies``), so it states only what the tools gave.

Each step says what it waits for (``AgentState.awaiting``) and keeps the request it built
(``AgentState.asked``); ``advance`` reads that instead of guessing from the response's shape. A route
may declare a follow-up after its tool (act after a check): ``_act`` runs that chain as one explicit
loop, so one routing step can carry out a check and the action it allows.

A message that holds several requests (``agents.requests``) has its parts ranked in the same routing
step; when two route confidently to different calls, each part runs its own chain in order, reading only
its own words (its ids, its consent), and the turn's reply joins the parts' replies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from agents import conversation, narrowing, protocol, replies, requests, retrieval
from agents.consent import Consent
from agents.finish import error, finish_rendered, finish_with_text, join_replies, say
from agents.model_io import ChatMessage, ModelRequest, ModelResponse, ToolCall
from agents.model_text import FALLBACK_TEXT
from agents.prompting import user_text
from agents.route_table import ANSWER_ROUTE_TOOL, REPLY_ROUTE_TOOL, Route
from agents.router import Router, UnknownRoute, router_for
from agents.state import AgentState, Awaiting, Outcome, ToolCallRecord, merge, passage_index, tool_results
from agents.tool_calls import arguments_of, consent_to, last_call, run_tools, stop_flag, unrequested
from tools.registry import ToolExecutor
from tools.spec import ToolSpec
from tools.toolbox import tool_declarations

FLAG_PROTOCOL_INVALID = "protocol_invalid"  # a constrained step's output was not one of the protocol's shapes
FLAG_NO_VALID_ARGUMENTS = "tool_no_valid_arguments"  # the routed tool has no valid value for a required argument
FLAG_LOW_CONFIDENCE = "route_low_confidence"  # no route was near enough: a clarifying question
FLAG_OTHER_LANGUAGE = "other_language"  # the message reads as another language: a clarifying question
FLAG_WHICH_RECORD = "asked_which_record"  # several records could be meant by an action: asked which
FLAG_ONLY_RECORD = "picked_only_record"  # the action applies to one record only: picked it and said so
FLAG_SEVERAL_REQUESTS = "several_requests"  # the message held several requests, each answered by its own route
MAX_REQUESTS = 2  # requests of one message answered in one turn (each may take a model step to decode its call)
CHAT_MAX_TOKENS = 64  # a model-written chat reply (a reply route without a text): two or three sentences


@dataclass(frozen=True)
class _Run:
    """A call settled without another model step: run it now (``said``: the decision as the assistant's message)."""

    state: AgentState
    call: ToolCall
    said: str


class ConstrainedProtocol:
    """Decisions under a JSON schema, routed when the prompt version has a router."""

    def writes_from_passages(self, state: AgentState) -> bool:
        """A model that chooses and replies itself answers from the passages; a routed turn quotes them instead."""
        return router_for(state.version, state.config.pack) is None

    def begin(self, state: AgentState) -> AgentState:
        router = router_for(state.version, state.config.pack)
        if router is None:
            return _decide(state, _narrowed_tools(state, state.config.tools), reply_text=True)
        text = user_text(state.enriched)
        index = passage_index(state)
        if not router.reads(text, index.vocabulary if index is not None else ()):
            # Routing by an English model's embeddings cannot read it: say so, and what it can help with.
            state = replace(state, flags=merge(state.flags, [FLAG_OTHER_LANGUAGE]))
            return say(state, ModelResponse(text=""), "language")
        parts = requests.split(text) if _most_requests(state) >= 2 else ()
        return replace(state, awaiting=Awaiting.ROUTE, asked=router.request(text, parts))

    def advance(self, state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
        if state.awaiting == Awaiting.ROUTE and response.route:
            router = router_for(state.version, state.config.pack)
            assert router is not None  # only a turn with a router awaits a ranking
            return _next_request(_routed(state, response, router, executor), response, router, executor)
        if state.awaiting != Awaiting.DECISION or state.asked is None or state.asked.response_schema is None:
            # A plain reply step (a chat route), or a routing step answered without a ranking: the model's text.
            return finish_with_text(state, response)
        done = _unfocused(_decided(_focused(state), response, executor), state)
        router = router_for(state.version, state.config.pack)
        return _next_request(done, response, router, executor) if router is not None else done


def _decided(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """After a decision step: run the call it decoded, or reply."""
    assert state.asked is not None and state.asked.response_schema is not None
    try:
        decision = protocol.parse_decision(response.text, state.asked.response_schema, f"call_{state.step}")
    except protocol.ProtocolError:
        state = replace(state, flags=merge(state.flags, [FLAG_PROTOCOL_INVALID]))
        results = _results(state)
        return finish_rendered(state, response, replies.render(state.pack, results) if results else FALLBACK_TEXT)
    if decision.call is None:
        results = _results(state)
        if results:
            return finish_rendered(state, response, replies.render(state.pack, results))
        return finish_with_text(state, replace(response, text=decision.text))
    return _act(_Run(state, decision.call, response.text), response, executor)


def _routed(state: AgentState, response: ModelResponse, router: Router, executor: ToolExecutor) -> AgentState:
    """After the routing step: the route's tool (its call planned and run), its text, an article, or a question.

    A message whose parts route confidently to different calls starts on its first part (``_next_request``
    runs the others).
    """
    try:
        decision = router.decide(response.route)
        parts = requests.split(user_text(state.enriched))
        several = router.several(parts, response.part_routes, _most_requests(state), partial(_can_answer, state))
    except UnknownRoute as exc:
        return error(state, f"the backend routed to unknown route {exc.args[0]!r}", FLAG_PROTOCOL_INVALID)
    if several:
        chosen = requests.Requests(tuple(p for p, _ in several), tuple(r.name for _, r in several))
        state = replace(state, requests=chosen, flags=merge(state.flags, [FLAG_SEVERAL_REQUESTS]))
        return _answer_part(state, response, router, executor)
    route = decision.route
    state = replace(state, route=route.name, flags=merge(state.flags, [f"route_{route.name}"]))
    if not decision.confident:
        # No example is near enough to act on: ask, naming what the agent can help with.
        return say(replace(state, flags=merge(state.flags, [FLAG_LOW_CONFIDENCE])), response, "clarify")
    return _take(state, route, response, executor)


def _take(state: AgentState, route: Route, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """Answer by ``route``: its text, a model reply, an article's passage, or its tool's call chain."""
    if route.tool == REPLY_ROUTE_TOOL:
        if route.say:
            return say(state, response, route.say)
        cap = min(state.config.max_tokens, CHAT_MAX_TOKENS)
        return replace(state, awaiting=Awaiting.TEXT, asked=ModelRequest(messages=state.messages, max_tokens=cap))
    if route.tool == ANSWER_ROUTE_TOOL:
        if state.passages:  # the passage that answers, quoted from the article it names
            return finish_rendered(state, response, retrieval.answer_text(state.passages), "article")
        return say(replace(state, flags=merge(state.flags, [FLAG_LOW_CONFIDENCE])), response, "clarify")
    return _act(_plan(state, response, route.tool, dict(route.args)), response, executor)


# ---------------------------------------------------------------------------
# Several requests in one message
# ---------------------------------------------------------------------------


def _can_answer(state: AgentState, part: str, route: Route) -> bool:
    """Whether ``route`` answers ``part`` beside another request: an article route only when a passage matches it.

    A hand-off is no answer beside another: a fragment the router misreads ("what's going on with it?")
    would end the turn with a person. A message that asks for one is routed whole, as before.
    """
    if route.tool == state.pack.handoff_tool:
        return False
    if route.tool != ANSWER_ROUTE_TOOL:
        return True
    index = passage_index(state)
    return index is not None and bool(index.search(part))


def _most_requests(state: AgentState) -> int:
    """How many requests a turn may answer: each may take a decision step, and the last step runs no tools."""
    return min(MAX_REQUESTS, state.config.max_steps - 2)


def _answer_part(state: AgentState, response: ModelResponse, router: Router, executor: ToolExecutor) -> AgentState:
    """Run the current part's route, reading only its words."""
    assert state.requests is not None
    route = router.table.routes[state.requests.routes[state.requests.current]]
    state = replace(state, route=route.name, flags=merge(state.flags, [f"route_{route.name}"]))
    return _unfocused(_take(_focused(state), route, response, executor), state)


def _next_request(
    state: AgentState, response: ModelResponse, router: Router | None, executor: ToolExecutor
) -> AgentState:
    """After a part's chain answered: keep its reply and run the next part; at the end, join the replies.

    A part that hands off or fails ends the turn (a hand-off still says what was answered before it).
    """
    parts = state.requests
    while parts is not None and router is not None and state.outcome == Outcome.ANSWERED and not parts.last:
        parts = parts.next(state.reply_text, len(tool_results(state)))
        state = replace(state, outcome=Outcome.PENDING, reply_text="", notes=(), requests=parts)
        state = _answer_part(state, response, router, executor)
    if parts is not None and parts.replies and state.done:
        return join_replies(state, parts.replies)
    return state


def _focused(state: AgentState) -> AgentState:
    """The state as the current part's chain sees it: the part as the customer's words, its own passages."""
    parts = state.requests
    if parts is None:
        return state
    index = passage_index(state)
    hits = tuple(index.search(parts.part)) if index is not None else ()
    return replace(state, enriched=requests.focused(state.enriched, parts.part), passages=hits)


def _unfocused(state: AgentState, before: AgentState) -> AgentState:
    """``state`` with the whole message back (``before``'s), once a part's chain has returned."""
    if before.requests is None:
        return state
    return replace(state, enriched=before.enriched, passages=before.passages)


def _results(state: AgentState) -> list[tuple[str, dict[str, Any]]]:
    """The tool results of the request being answered (of the turn, unless it holds several)."""
    results = tool_results(state)
    return results[state.requests.first_result :] if state.requests is not None else results


def _calls(state: AgentState) -> tuple[ToolCallRecord, ...]:
    """The tool calls of the request being answered (one record per result, so they start at the same index)."""
    return state.tool_calls[state.requests.first_result :] if state.requests is not None else state.tool_calls


def _act(planned: AgentState | _Run, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """Run the planned call, then the next one while the route's follow-up asks for it: one step's tool chain.

    Each call goes through ``run_tools`` (the consent gate, the step limit); a follow-up runs at most once.
    """
    while isinstance(planned, _Run):
        ran = replace(planned.state, asked=None)
        state = run_tools(ran, replace(response, text=planned.said, tool_calls=(planned.call,)), executor)
        if state.done:
            return state
        planned = _after_tools(state, response)
    return planned


def _after_tools(state: AgentState, response: ModelResponse) -> AgentState | _Run:
    """After a tool result: the route's follow-up, or (model-chosen tools) the model's next decision, or the reply."""
    router = router_for(state.version, state.config.pack)
    if router is None:
        return _decide(state, _narrowed_tools(state, state.config.tools), reply_text=False)
    results = _results(state)
    call = last_call(state)
    assert call is not None  # a tool has just run
    follow = router.follow_up(state.route, call, results[-1][1])
    if follow is not None and follow.tool not in {c.name for c in _calls(state)}:
        route_args = dict(router.table.routes[state.route].args)
        args = arguments_of(call)
        if consent_to(state, follow.tool, {**route_args, **args}) == Consent.REQUESTED:
            presets = {k: args[k] for k in follow.args_from if k in args}
            return _plan(state, response, follow.tool, presets)
    return finish_rendered(state, response, replies.render(state.pack, results))


def _plan(state: AgentState, response: ModelResponse, tool: str, presets: dict[str, Any]) -> AgentState | _Run:
    """The call a route (or its follow-up) lands on, with ``presets`` fixed.

    Returns the call to run when narrowing leaves one value per argument; a pending state when the model
    must decode what is left; a finished one for an action not asked for (offered instead), an argument
    with no valid value, or a question of which record is meant.
    """
    [decl] = tool_declarations([tool], state.config.pack)
    stopped = unrequested(state, ToolCall(f"call_{state.step}_{len(state.tool_calls)}", tool, json.dumps(presets)))
    if stopped is not None:
        # A route that lands on an action the customer did not ask for offers it instead of acting:
        # nothing is decoded or run (the same gate stands in front of every executed call).
        state = replace(state, flags=merge(state.flags, [stop_flag(stopped)]))
        offer = replies.render(state.pack, [(tool, stopped.content)])
        if stopped.content["reason"] != "third_party" and state.passages:
            # The policy behind the offer, quoted from the article it comes from.
            offer = f"{retrieval.answer_text(state.passages)}\n{offer}"
        return finish_rendered(state, response, offer)
    spec = state.pack.tools_by_name[tool]
    params = narrowing.narrow(decl, _turn_facts(state), spec, presets)
    if params is None:
        state = replace(state, flags=merge(state.flags, [FLAG_NO_VALID_ARGUMENTS]))
        # What is missing, in the customer's terms: an action says what it needs.
        action = state.pack.action_of(tool, presets)
        return finish_rendered(state, response, f"I can {action.offer}." if action else FALLBACK_TEXT, "clarify")
    if spec.applies:
        params, state, question = _which_record(state, spec, params)
        if question:
            return finish_rendered(replace(state, notes=()), response, question, "clarify")
    args = narrowing.fixed_arguments(params)
    several = _open_record(spec, params) if args is None else None
    if several is not None:
        # Several of the customer's records could be meant and nothing in the conversation picks one: ask which,
        # rather than let the model guess (a guess reads or acts on a record the customer may not have meant).
        kind, ids = several
        state = replace(state, flags=merge(state.flags, [FLAG_WHICH_RECORD]))
        return finish_rendered(state, response, _which_question(state, kind, ids), "clarify")
    if args is None and state.requests is not None and state.step + 1 >= state.config.max_steps:
        # A request of several with no step left to decode its call and still run it: ask instead.
        return finish_rendered(state, response, conversation.say(state.pack, "clarify"), "clarify")
    if args is None:  # something left to choose: the model decodes it under the narrowed schema
        return _decide(state, [{**decl, "parameters": params}], reply_text=False, allow_reply=False)
    said = json.dumps({"name": tool, "parameters": args}, ensure_ascii=False)
    call = ToolCall(id=f"call_{state.step}_{len(state.tool_calls)}", name=tool, arguments=json.dumps(args))
    return _Run(state, call, said)


def _which_record(state: AgentState, spec: ToolSpec, params: dict[str, Any]) -> tuple[dict[str, Any], AgentState, str]:
    """Several of the customer's records could be meant by an action: keep the only one it applies to, or ask.

    Ids the customer typed in this turn stand (the tool says if the action cannot apply to them). Otherwise,
    of the candidates (named by an item, earlier in the conversation, or all of the customer's), those the
    action applies to (``ToolSpec.applies``): one is picked and the reply says so; several get a question.
    Returns the parameters, the state (with the note to say) and the question ('' when none is needed).
    """
    props = dict(params.get("properties") or {})
    facts = _turn_facts(state)
    this_turn = replace(facts, history=())
    for arg, rule in spec.applies.items():
        kind = spec.id_args[arg]
        fmt = state.pack.ids[kind]
        prop = props.get(arg) or {}
        candidates = narrowing.allowed(prop)
        if this_turn.referenced_ids(kind) or not candidates:
            continue  # named in this turn, by id or by an item: that stands
        records = {str(r[fmt.field]): r for r in facts.records.get(kind, ())}
        fits = [c for c in records if rule.holds(records[c])]
        if len(fits) == 1:
            props[arg] = {"const": fits[0]}
            note = f"{fits[0]} is the only {kind} of yours that {rule.says}, so I've used that one."
            if candidates != fits:
                state = replace(state, notes=(*state.notes, note), flags=merge(state.flags, [FLAG_ONLY_RECORD]))
        elif len(fits) > 1 and len(set(candidates) & set(fits)) != 1:
            state = replace(state, flags=merge(state.flags, [FLAG_WHICH_RECORD]))
            return params, state, _which_question(state, kind, fits)
        elif len(fits) > 1:
            props[arg] = {"const": next(c for c in candidates if c in fits)}
    return {**params, "properties": props}, state, ""


def _open_record(spec: ToolSpec, params: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The first id argument the narrowed ``params`` leave open (its kind and the ids it may be), if any."""
    props = params.get("properties") or {}
    for arg, kind in spec.id_args.items():
        choices = narrowing.allowed(props.get(arg) or {})
        if len(choices) > 1:
            return kind, [str(c) for c in choices]
    return None


def _which_question(state: AgentState, kind: str, ids: Iterable[str]) -> str:
    """Which of these records of the customer's is meant, each named by its own words."""
    fmt = state.pack.ids[kind]
    records = {str(r[fmt.field]): r for r in _turn_facts(state).records.get(kind, ())}
    named = [f"{i} ({', '.join(fmt.naming_words(records[i])[:2])})" if i in records else i for i in list(ids)[:4]]
    return f"Which {kind} do you mean: {' or '.join(named)}?"


# ---------------------------------------------------------------------------
# Decision requests
# ---------------------------------------------------------------------------


def _turn_facts(state: AgentState) -> narrowing.TurnFacts:
    enriched, pack = state.enriched, state.pack
    history = tuple(e.text for e in reversed(enriched.turn.history))
    return narrowing.TurnFacts(
        text=user_text(enriched),
        history=history,
        records={f.kind: f.records(enriched.context) for f in pack.id_formats if f.context},
        formats=pack.ids,
        from_text=router_for(state.version, state.config.pack) is not None,
        any_id=pack.any_id,
    )


def _decide(state: AgentState, tools: list[dict[str, Any]], reply_text: bool, allow_reply: bool = True) -> AgentState:
    """The state waiting for one decision among ``tools`` (narrowed declarations), or a reply if allowed."""
    variants = [protocol.call_variant(t["name"], t["parameters"]) for t in tools]
    if allow_reply:
        variants.append(protocol.reply_variant(reply_text))
    instruction = protocol.FUNCTION_CALLING_PREAMBLE + "\n" + protocol.function_list(tools, reply_text, allow_reply)
    if allow_reply:
        system = ChatMessage("system", f"{state.messages[0].content}\n\n{instruction}")
    else:
        # A routed call's open arguments: the model only chooses among the narrowed values, so it reads the
        # records those values name, not the whole system prompt. On one core SmolLM2 reads ~240 prompt
        # tokens/s: the full prompt made this step 2.4-4.3 s, most of a turn's model time.
        records = _records_naming(state, _record_ids(state, tools))
        system = ChatMessage("system", f"{instruction}\n{records}".strip())
    request = ModelRequest(
        messages=(system, *state.messages[1:]),
        max_tokens=state.config.max_tokens,
        response_schema=protocol.decision_schema(variants),
    )
    return replace(state, awaiting=Awaiting.DECISION, asked=request)


def _record_ids(state: AgentState, tools: Iterable[dict[str, Any]]) -> set[str]:
    """The record ids the narrowed declarations still allow (each id argument's ``const`` or ``enum``)."""
    ids: set[str] = set()
    for tool in tools:
        props = tool["parameters"].get("properties") or {}
        for arg in state.pack.tools_by_name[tool["name"]].id_args:
            ids.update(str(v) for v in narrowing.allowed(props.get(arg) or {}))
    return ids


def _records_naming(state: AgentState, ids: set[str]) -> str:
    """The lines of the customer's records (as the pack renders them for its prompt) that name one of ``ids``."""
    render = state.pack.prompt_context
    if render is None or not ids:
        return ""
    rendered = render(state.enriched.context or {})
    lines = [line for text in rendered.values() for line in text.splitlines() if any(i in line for i in ids)]
    return "\n".join(lines)


def _narrowed_tools(state: AgentState, names: Iterable[str]) -> list[dict[str, Any]]:
    facts = _turn_facts(state)
    out = []
    for decl in tool_declarations(names, state.config.pack):
        params = narrowing.narrow(decl, facts, state.pack.tools_by_name[decl["name"]])
        if params is not None:
            out.append({**decl, "parameters": params})
    return out
