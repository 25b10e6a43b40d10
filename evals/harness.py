"""Run a scenario's conversation through the same agent code as the pipeline.

Per trial: a fresh ``World`` (the seed state in its own emulator project), then
for each user message, what the pipeline does for a turn:

- the turn: ``contract.turn.Turn`` with the session's history (user messages and
  the agent's published replies, as the session stage keeps them);
- enrichment: the pipeline's own ``FirestoreContextHandler`` on the trial's project (its cache off: a
  turn must see what the turn before changed), with its ``customer_unknown`` / ``context_unavailable`` flags;
- the agent: ``agents.steps.start`` (input guardrails, prompt), then
  ``handler.run_inference([state], model)`` (the backend's RunInference code) and
  ``agents.steps.advance`` with the trial's executor (``World.executor``: Firestore, and a pack's own MCP
  servers over its own store) bound to
  the trial's database, until the state is done; a failed model call is
  ``agents.steps.fail``, as in the pipeline;
- the prompt version and step loop come from ``pipeline.graph.agent_plan`` for
  the backend's registry entry (tools and v2 prompt for tool-calling models, one plain step otherwise);
- the policy clock is the pack's ``Pack.reference_time`` (the seed data's "now").

The conversation ends when the user has nothing more to say, or when a turn ends
in a hand-off (a human takes over) or an error.

Scripted ``turns`` and simulated users say one message per turn, a minute apart. Timed
``messages`` (offsets in seconds) go through the session stage's own rules instead
(``pipeline.session_simulator.SessionSimulator`` on ``pipeline.session_core``, with the pipeline's
option defaults): the quiet window and max hold decide which messages make a turn, a message id
seen before is dropped, messages that arrive while a turn is in flight wait for the next one.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import apache_beam as beam

from agents import steps, tool_calls
from agents.state import AgentState, Outcome, StepConfig
from contract.messages import AgentReply, InboundMessage
from contract.turn import EnrichedTurn, HistoryEntry, Role, Turn, UserMessage
from evals.packworld import reference_time
from evals.scenario import MESSAGE_ID_PREFIX, Scenario
from evals.trace import CallTrace, TrialTrace, TurnTrace
from evals.users import ModelUser, SimUser, make_user
from evals.world import World, diff
from pipeline.enrichment.context import CachePolicy, ContextResult
from pipeline.enrichment.firestore import FirestoreContextHandler
from tools.packs import DEFAULT_PACK, load_pack
from tools.registry import ToolExecutor

# The conversation happens just before the seed data's "now" (the policy clock).
BEFORE_NOW = timedelta(minutes=30)
TURN_GAP = timedelta(minutes=1)


def conversation_start(pack: str = DEFAULT_PACK) -> datetime:
    """When a scenario's conversation starts: half an hour before ``pack``'s seed "now"."""
    return reference_time(pack) - BEFORE_NOW


def agent_plan(
    backend: str, *, max_steps: int | None = None, max_tokens: int | None = None, pack: str = DEFAULT_PACK
) -> tuple[str, StepConfig]:
    """The prompt version and step config the pipeline uses for ``backend`` and ``pack``
    (``pipeline.graph.agent_plan``); unset limits take the pipeline options' defaults."""
    from pipeline.graph import agent_plan as pipeline_plan
    from pipeline.options import default

    return pipeline_plan(
        backend,
        max_steps=default("max_agent_steps") if max_steps is None else max_steps,
        max_tokens=default("model_max_tokens") if max_tokens is None else max_tokens,
        pack=pack,
    )


@dataclass
class Agent:
    """A backend ready to answer: the ModelHandler, its loaded model, and the pipeline's plan for it."""

    backend: str
    handler: Any  # a Beam ModelHandler of agents.backends
    version: str
    config: StepConfig
    model: Any = None
    clock: Callable[[], datetime] | None = None  # the policy clock; None: the pack's seed "now"
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.clock is None:
            now = reference_time(self.config.pack)
            self.clock = lambda: now

    def sampling(self, trial: int, turn: int) -> dict[str, Any]:
        """RunInference args of one turn: greedy, or sampled with a seed of its own (reproducible runs)."""
        if self.temperature <= 0:
            return {}
        return {"temperature": self.temperature, "seed": 1_000 * trial + turn}

    def load(self) -> Agent:
        if self.model is None:
            self.model = self.handler.load_model()
        return self

    @property
    def model_name(self) -> str:
        return str(getattr(self.handler, "model_name", self.backend))


def trial_config(agent: Agent, scenario: Scenario) -> StepConfig:
    """The agent's step config with the scenario's policy (``seed.policy``): the prompt's digests and the tools'
    verdicts then follow the same policy as the world's help articles."""
    if not scenario.seed.policy:
        return agent.config
    return replace(agent.config, policy=scenario.policy)


def context_handler(project: str, pack: str = DEFAULT_PACK) -> FirestoreContextHandler:
    """The pipeline's Firestore enrichment handler for one trial's project and pack, without its cache."""
    cache = CachePolicy(ttl_s=0, unknown_ttl_s=0)
    return FirestoreContextHandler(project, timeout_s=5.0, cache=cache, collections=load_pack(pack).context)


def load_context(store: FirestoreContextHandler, customer_id: str) -> tuple[ContextResult, float]:
    """The turn's context as the Firestore enrichment handler answers it, and the time it took (a failed read
    flags the turn, it does not fail it)."""
    t0 = time.perf_counter()
    _, row = store(beam.Row(customer_id=customer_id))
    result = ContextResult(row.context, tuple(row.context_flags))
    return result, (time.perf_counter() - t0) * 1000.0


def run_turn(
    agent: Agent,
    enriched: EnrichedTurn,
    executor: ToolExecutor,
    sampling: dict[str, Any] | None = None,
    config: StepConfig | None = None,
) -> tuple[AgentState, list]:
    """One agent turn to the end; returns the final state and the raw tool calls as (step, ToolCall, status).

    ``config`` replaces the agent's step config for this turn (a scenario's own policy)."""
    state = steps.start(enriched, agent.version, config or agent.config)
    calls: list = []
    while not state.done:
        try:
            [result] = list(agent.handler.run_inference([state], agent.model, sampling or None))
        except Exception as exc:  # noqa: BLE001 - the pipeline's failed-batch path
            state = steps.fail(state, f"model call failed: {type(exc).__name__}: {exc}"[:1000])
            break
        response = result.inference
        before = len(state.tool_calls)
        state = steps.advance(state, response, executor)
        records = state.tool_calls[before:]
        # The calls as made: the model's own, and those the constrained protocol made for it (agents.steps).
        for call, record in zip(tool_calls.calls_made(state)[before:], records, strict=False):
            calls.append((record.step, call, record.status))
    return state, calls


def _args(call: Any) -> dict[str, Any]:
    try:
        return call.parsed_arguments()
    except ValueError:
        return {"_raw": str(call.arguments)[:500]}


def run_trial(
    scenario: Scenario,
    trial: int,
    agent: Agent,
    project: str,
    *,
    user: SimUser | None = None,
    keep_world: list[World] | None = None,
) -> TrialTrace:
    """One conversation of ``scenario`` against a fresh copy of its seed state, traced for scoring."""
    trace = TrialTrace(scenario.id, trial, project=project)
    world = World(scenario, project)
    if keep_world is not None:
        keep_world.append(world)  # keeps the client object alive: the tools' article cache is keyed by id()
    t0 = time.perf_counter()
    try:
        world.setup()
        assert world.client is not None
        trace.before = world.snapshot()
        if scenario.pack != agent.config.pack:
            raise ValueError(f"scenario of pack {scenario.pack!r}, agent of pack {agent.config.pack!r} (--pack)")
        executor = world.executor(agent.clock)
        user = user or make_user(scenario)
        with context_handler(project, scenario.pack) as store:
            _converse(scenario, trial, agent, user, store, executor, trace)
        trace.after = world.snapshot()
        trace.changes = diff(trace.before, trace.after)
        if isinstance(user, ModelUser):
            trace.user_fallbacks = user.fallbacks
    except Exception as exc:  # noqa: BLE001 - one broken trial must not stop the run; it is reported
        trace.harness_error = f"{type(exc).__name__}: {exc}"[:2000]
        trace.harness_error += "\n" + "".join(traceback.format_exc(limit=4))[-1500:]
    finally:
        trace.wall_ms = (time.perf_counter() - t0) * 1000.0
        world.teardown()
    return trace


def session_config() -> Any:
    """The session stage's settings as the pipeline's option defaults give them (``Settings.session``)."""
    from pipeline.settings import Settings

    return Settings.local().session


def _agent_turn(
    scenario: Scenario,
    trial: int,
    agent: Agent,
    store: FirestoreContextHandler,
    executor: ToolExecutor,
    trace: TrialTrace,
    turn: Turn,
    reply_at: datetime,
    released_s: float | None = None,
) -> tuple[AgentState, AgentReply]:
    """One released turn through enrichment and the agent, traced; returns the final state and the reply."""
    index = turn.turn_index
    t0 = time.perf_counter()
    context, enrich_ms = load_context(store, scenario.customer)
    enriched = EnrichedTurn(turn, context.context, context.flags, enrich_ms)
    state, calls = run_turn(agent, enriched, executor, agent.sampling(trial, index), trial_config(agent, scenario))
    wall_ms = (time.perf_counter() - t0) * 1000.0
    reply = steps.to_reply(state, queue_ms=0.0, total_ms=wall_ms, created_at=reply_at)
    trace.turns.append(
        TurnTrace(
            index=index,
            user_text="\n".join(m.text for m in turn.messages),
            reply_text=reply.text,
            outcome=state.outcome.value,
            kind=reply.kind.value,
            flags=tuple(sorted(set(context.flags) | set(steps.eval_flags(state)))),
            handoff_reason=state.handoff.reason if state.handoff else None,
            steps=state.step,
            model_ms=state.model_ms,
            tools_ms=state.tools_ms,
            enrich_ms=enrich_ms,
            wall_ms=wall_ms,
            prompt_tokens=state.prompt_tokens,
            completion_tokens=state.completion_tokens,
            model=reply.model,
            error=state.error,
            message_ids=tuple(turn.message_ids),
            handoff=state.handoff.to_json_dict() if state.handoff else None,
            released_s=released_s,
        )
    )
    trace.calls += [CallTrace(index, step, call.name, _args(call), status) for step, call, status in calls]
    return state, reply


def _converse(
    scenario: Scenario,
    trial: int,
    agent: Agent,
    user: SimUser,
    store: FirestoreContextHandler,
    executor: ToolExecutor,
    trace: TrialTrace,
) -> None:
    """Scripted turns and simulated users: one message per turn, a minute apart (``user.messages``: timed)."""
    if scenario.user.messages is not None:
        _converse_timed(scenario, trial, agent, store, executor, trace)
        return
    session_id = f"eval-{scenario.id}-t{trial}"[:120]
    history: list[HistoryEntry] = []
    transcript: list[tuple[str, str]] = []
    start = conversation_start(scenario.pack)
    for index in range(scenario.user.max_turns):
        text = user.next_message(transcript)
        if text is None or not text.strip():
            break
        sent_at = start + index * TURN_GAP
        message_id = f"{MESSAGE_ID_PREFIX}{index}"
        turn = Turn(
            session_id=session_id,
            customer_id=scenario.customer,
            turn_index=index,
            messages=(UserMessage(message_id, text, sent_at),),
            history=tuple(history),
            omitted_history=0,
            released_at=sent_at,
        )
        trace.sent_message_ids.append(message_id)
        state, reply = _agent_turn(scenario, trial, agent, store, executor, trace, turn, sent_at + timedelta(seconds=5))
        history += [
            HistoryEntry(Role.USER, text, index, sent_at),
            HistoryEntry(Role.AGENT, reply.text, index, reply.created_at),
        ]
        transcript += [("user", text), ("agent", reply.text)]
        if state.outcome in (Outcome.HANDOFF, Outcome.ERROR):
            break


def _converse_timed(
    scenario: Scenario,
    trial: int,
    agent: Agent,
    store: FirestoreContextHandler,
    executor: ToolExecutor,
    trace: TrialTrace,
) -> None:
    """Timed messages through the session stage's own rules (``pipeline.session_simulator``): its quiet window,
    max hold and de-duplication make the turns, its history goes into them, and each reply comes back
    ``user.reply_after_s`` (simulated) after its turn was released. Ends when every message is answered,
    or at a hand-off or an error (a human takes over; what is still waiting is what the record misses)."""
    from pipeline.session_simulator import SessionSimulator  # the Beam-free core the SessionDoFn runs

    session_id = f"eval-{scenario.id}-t{trial}"[:120]
    start = conversation_start(scenario.pack)
    origin = start.timestamp()  # the session clock: seconds, with the conversation at offset 0
    session = SessionSimulator(session_config())
    texts = scenario.user.message_texts()
    arrivals: list[tuple[float, InboundMessage]] = []
    for i, m in enumerate(scenario.user.messages or ()):
        mid = m.id or f"{MESSAGE_ID_PREFIX}{i}"
        sent_at = start + timedelta(seconds=m.at)
        msg = InboundMessage(session_id=session_id, customer_id=scenario.customer, message_id=mid, text=texts[mid],
                             sent_at=sent_at)  # fmt: skip
        arrivals.append((m.at, msg))
    never = float("inf")
    reply: tuple[float, AgentReply] | None = None
    i = 0
    while True:
        meta = session.cells[session_id].meta.read() if session_id in session.cells else None
        waiting = meta is not None and (meta.pending_count > 0 or meta.in_flight is not None)
        if i == len(arrivals) and reply is None and not waiting:
            break
        next_arrival = arrivals[i][0] if i < len(arrivals) else never
        next_reply = reply[0] if reply else never
        due = session.next_due() if waiting else None
        next_timer = due - origin if due is not None else never  # offsets, like the arrivals and the reply
        if next_arrival <= min(next_reply, next_timer):
            at, msg = arrivals[i]
            i += 1
            if msg.message_id not in trace.sent_message_ids:
                trace.sent_message_ids.append(msg.message_id)
            outputs = session.message(msg, origin + at)
        elif reply is not None and next_reply <= next_timer:
            at, answer = reply
            reply = None
            outputs = session.reply(answer, origin + at) + session.advance_to(origin + at)
        elif due is not None:
            outputs = session.advance_to(due)
        else:
            break  # nothing left that can happen (a message waits on no timer): cannot occur with the stage's rules
        turns = [o for o in outputs if isinstance(o, Turn)]
        for turn in turns:
            released = round(turn.released_at.timestamp() - origin, 3)  # released_at has microseconds
            replied = released + scenario.user.reply_after_s
            state, answer = _agent_turn(scenario, trial, agent, store, executor, trace, turn,
                                        start + timedelta(seconds=replied), released)  # fmt: skip
            if state.outcome in (Outcome.HANDOFF, Outcome.ERROR):
                trace.duplicates = session.counts.get("duplicates", 0)
                return
            reply = (replied, answer)
    trace.duplicates = session.counts.get("duplicates", 0)
