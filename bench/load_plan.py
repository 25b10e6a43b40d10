"""The load bench's plan: who arrives when, and what each customer says (``LoadProfile`` -> ``plan_load``).

Load model: ``sessions`` customers arrive as a Poisson process (``arrival_rate`` sessions/s; default:
all within ``ramp_s``), each holds a conversation of ``turns`` turns (uniform in the range). A turn is
one message, or with probability ``burstiness`` a burst of 2..``max_burst`` messages ``burst_gap_s``
apart (people type in several lines); message lengths are uniform in ``chars``. A plan is
deterministic for a seed, so the pipeline and the baseline get the same load, message for message.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.harness import random_prose

_VOCABULARY = (
    "order delivery refund account password invoice package tracking number charged twice card address shipping "
    "late damaged return label subscription cancel upgrade plan discount code warranty replacement please help "
    "thanks still waiting yesterday today week store app login email support ticket status where is my the a "
    "was not and but for with on to of it this that have has been can you we our your when will arrive"
)
_WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class LoadProfile:
    sessions: int = 100
    arrival_rate: float | None = None  # new sessions per second (Poisson); None: sessions / ramp_s
    ramp_s: float = 5.0
    burstiness: float = 0.3  # share of turns sent as a burst of several messages
    max_burst: int = 3
    burst_gap_s: tuple[float, float] = (0.1, 0.4)
    turns: tuple[int, int] = (1, 3)  # session length in turns
    chars: tuple[int, int] = (20, 200)  # message length
    think_s: tuple[float, float] = (0.5, 2.0)  # pause after a reply before the next turn
    customers: int = 300  # seeded customers the sessions are drawn from
    seed: int = 7
    turn_timeout_s: float = 300.0  # a turn not answered by then is counted lost and the session goes on
    # A pack's own load (bench.load --packs): its customers' ids and texts its routes answer. Empty: the
    # shop's ids C0001..C{customers} and prose from _VOCABULARY, drawn as they always were.
    customer_ids: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.arrival_rate if self.arrival_rate else self.sessions / max(self.ramp_s, 1e-3)


@dataclass(frozen=True)
class PlannedMessage:
    message_id: str
    text: str
    gap_s: float  # wait before sending it (0 for a turn's first message)


@dataclass(frozen=True)
class PlannedSession:
    session_id: str
    customer_id: str
    start_s: float  # offset from the run's start
    turns: tuple[tuple[PlannedMessage, ...], ...]
    think_s: tuple[float, ...]  # after each turn's reply


def _text(rng: random.Random, profile: LoadProfile) -> str:
    if profile.texts:
        return rng.choice(profile.texts)
    return (random_prose(rng, *profile.chars, _WORDS) or "hello") + "?"


def _customer(rng: random.Random, profile: LoadProfile) -> str:
    if profile.customer_ids:
        return rng.choice(profile.customer_ids)
    return f"C{rng.randint(1, profile.customers):04d}"


def plan_load(profile: LoadProfile, prefix: str) -> list[PlannedSession]:
    """A deterministic plan (``profile.seed``): the same texts and timings whatever ``prefix`` is."""
    rng = random.Random(profile.seed)
    out = []
    t = 0.0
    for i in range(profile.sessions):
        if i:
            t += rng.expovariate(profile.rate)
        session_id = f"{prefix}-{i:05d}"
        n_turns = rng.randint(*profile.turns)
        turns = []
        for k in range(n_turns):
            size = rng.randint(2, max(2, profile.max_burst)) if rng.random() < profile.burstiness else 1
            turns.append(
                tuple(
                    PlannedMessage(
                        f"{session_id}-t{k}-m{j}",
                        _text(rng, profile),
                        0.0 if j == 0 else rng.uniform(*profile.burst_gap_s),
                    )
                    for j in range(size)
                )
            )
        think = tuple(rng.uniform(*profile.think_s) for _ in range(n_turns))
        customer = _customer(rng, profile)
        out.append(PlannedSession(session_id, customer, t, tuple(turns), think))
    return out
