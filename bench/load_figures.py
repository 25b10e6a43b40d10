"""The load bench's figures: latency and throughput of one played plan, ratios, the summary table.

Latency per answered turn (one reply) with p50/p90/p99/max: ``last_message_to_reply`` (what the
customer waits after their last line, the quiet window included), ``first_message_to_reply``, and the
split ``queue`` (first message sent -> turn released, quiet window included), ``enrich``, ``model``,
``tools`` (from the eval rows in BigQuery; the reply's own timings where a row is missing),
``agent_other`` (reply built minus the four above) and ``publish`` (reply built -> received).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from bench.harness import check_delivery, summary
from bench.load_player import PlayResult
from tools.packs import DEFAULT_PACK


def eval_rows(project: str, endpoint: str, prefix: str, want: int, timeout_s: float = 60.0) -> dict[str, dict]:
    """Eval rows of the sessions starting with ``prefix``, waiting until ``want`` are there (or the timeout)."""
    from google.cloud import bigquery

    from contract.eval_rows import TURNS_TABLE
    from pipeline.options import EVAL_DATASET
    from stack.clients import bigquery_client

    bq = bigquery_client(project, endpoint)
    sql = (
        "SELECT turn_id, queue_ms, enrich_ms, model_ms, tools_ms, total_ms, kind, flags, "
        "prompt_tokens, completion_tokens "
        f"FROM `{project}.{EVAL_DATASET}.{TURNS_TABLE}` WHERE STARTS_WITH(session_id, @prefix)"
    )
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("prefix", "STRING", prefix)])
    deadline = time.monotonic() + timeout_s
    rows: dict[str, dict] = {}
    while True:
        rows = {r["turn_id"]: dict(r) for r in bq.query(sql, job_config=config).result()}
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


def figures(result: PlayResult, rows: dict[str, dict], cpu_s: float | None, rss_mb: float | None) -> dict[str, Any]:
    """Throughput and latency figures of one played plan."""
    by_turn: dict[str, tuple[Any, float]] = {}
    for reply, received in result.replies:
        by_turn.setdefault(reply.turn_id, (reply, received))  # first delivery: what the customer saw
    verdict = check_delivery(result.accepted, [r for r, _ in result.replies], [])
    series: dict[str, list[float]] = {
        k: []
        for k in (
            "last_message_to_reply_ms",
            "first_message_to_reply_ms",
            "queue_ms",
            "enrich_ms",
            "model_ms",
            "tools_ms",
            "agent_other_ms",
            "publish_ms",
        )
    }
    from_rows = 0
    for turn_id, (reply, received) in by_turn.items():
        sent = [result.sent_at[m] for m in reply.answers if m in result.sent_at]
        if not sent:
            continue
        first, last = min(sent), max(sent)
        row = rows.get(turn_id)
        t = row if row is not None else reply.timings.model_dump()
        from_rows += row is not None
        series["last_message_to_reply_ms"].append((received - last) * 1000)
        series["first_message_to_reply_ms"].append((received - first) * 1000)
        for k in ("queue_ms", "enrich_ms", "model_ms", "tools_ms"):
            series[k].append(float(t[k] or 0.0))
        total = float(t["total_ms"] or 0.0)
        series["agent_other_ms"].append(
            max(0.0, total - sum(float(t[k] or 0.0) for k in ("queue_ms", "enrich_ms", "model_ms", "tools_ms")))
        )
        series["publish_ms"].append(max(0.0, (received - first) * 1000 - total))
    span = max(1e-3, result.last_reply_at - result.first_sent_at)
    turns = len(by_turn)
    # What the model read and wrote per turn (from the eval rows): the work behind a turn's model time.
    tokens = {k: [float(r[k] or 0) for r in rows.values()] for k in ("prompt_tokens", "completion_tokens")}
    return {
        "sessions": result.sessions,
        "user_turns": result.user_turns,
        "user_turns_lost": result.user_turns_lost,
        "messages": result.messages,
        "turns_answered": turns,
        "eval_rows_found": from_rows,
        "duplicate_reply_deliveries": verdict.duplicate_deliveries,
        "invariant_violations": verdict.violations[:10],
        "publish_errors": result.publish_errors,
        "seconds": round(span, 2),
        "turns_per_s": round(turns / span, 2),
        "messages_per_s": round(result.messages / span, 2),
        "latency_ms": {k: summary(v) for k, v in series.items()},
        # The raw waits, for pooling rounds (``pool``); the bench takes them out before writing its report.
        "last_message_to_reply_samples_ms": series["last_message_to_reply_ms"],
        "cpu_s": None if cpu_s is None else round(cpu_s, 2),
        "cpu_ms_per_turn": None if cpu_s is None or not turns else round(cpu_s * 1000 / turns, 2),
        "peak_rss_mb": rss_mb,
        **{f"{k}_per_turn": round(sum(v) / len(v), 1) if v else None for k, v in tokens.items()},
    }


def pool(rounds: list[dict[str, Any]], waits_ms: list[float]) -> dict[str, Any]:
    """One system's rounds at one size as one figure for ``ratios``: the customers' waits pooled (percentiles
    over every answered turn of every round), throughput and CPU per turn averaged over the rounds."""

    def mean(key: str) -> float | None:
        values = [r[key] for r in rounds if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "turns_per_s": mean("turns_per_s"),
        "latency_ms": {"last_message_to_reply_ms": summary(waits_ms)},
        "quiet_window_ms": rounds[0]["quiet_window_ms"],
        "cpu_ms_per_turn": mean("cpu_ms_per_turn"),
        "cpu_ms_per_turn_net_of_idle": mean("cpu_ms_per_turn_net_of_idle"),
    }


def ratios(pipeline: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    lat_p, lat_b = pipeline["latency_ms"], baseline["latency_ms"]
    key = "last_message_to_reply_ms"
    return {
        "throughput_baseline_over_pipeline": div(baseline["turns_per_s"], pipeline["turns_per_s"]),
        "latency_p50_pipeline_over_baseline": div(lat_p[key].get("p50"), lat_b[key].get("p50")),
        "latency_p99_pipeline_over_baseline": div(lat_p[key].get("p99"), lat_b[key].get("p99")),
        # The quiet window is the same deliberate wait in both: compare what is left.
        "latency_p50_beyond_quiet_window_ratio": div(
            (lat_p[key].get("p50") or 0) - pipeline["quiet_window_ms"],
            (lat_b[key].get("p50") or 0) - baseline["quiet_window_ms"],
        ),
        "cpu_per_turn_pipeline_over_baseline": div(pipeline["cpu_ms_per_turn"], baseline["cpu_ms_per_turn"]),
        "cpu_per_turn_net_of_idle_pipeline_over_baseline": div(
            pipeline.get("cpu_ms_per_turn_net_of_idle"), baseline.get("cpu_ms_per_turn_net_of_idle")
        ),
    }


def one_line(fig: dict[str, Any]) -> str:
    lat = fig["latency_ms"]["last_message_to_reply_ms"]
    return (
        f"{fig['system']:>8} {backend(fig):>7} n={fig['sessions']:<5} turns={fig['turns_answered']:<5} "
        f"{fig['turns_per_s']:>7.2f} turns/s  last msg->reply p50 {lat.get('p50', 0):>7.0f} "
        f"p99 {lat.get('p99', 0):>7.0f} max {lat.get('max', 0):>7.0f} ms  cpu/turn {fig['cpu_ms_per_turn']} ms  "
        f"lost {fig['user_turns_lost']} violations {len(fig['invariant_violations'])}"
    )


def ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def backend(fig: dict[str, Any]) -> str:
    """The backend, and the pack when the run compared packs (``bench.load --packs``)."""
    pack = fig.get("pack")
    return f"{fig['backend']} ({pack})" if pack and pack != DEFAULT_PACK else fig["backend"]


def table(report: dict[str, Any]) -> Iterator[str]:
    yield "| backend | sessions | system | round (played) | turns | turns/s " \
          "| last msg→reply p50 / p90 / p99 / max (ms) | queue p50 | enrich p50 | model p50 | publish p50 " \
          "| CPU ms/turn |"  # fmt: skip
    yield "|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|"
    for r in report["results"]:
        lat = r["latency_ms"]

        def p(k: str, q: str = "p50", lat: dict[str, Any] = lat) -> str:
            return f"{lat[k].get(q, 0):.0f}"

        e2e = "last_message_to_reply_ms"
        yield (
            f"| {backend(r)} | {r['sessions']} | {r['system']} "
            f"| {r.get('round', 0) + 1} ({ordinal(r.get('played', 1))}) "
            f"| {r['turns_answered']} | {r['turns_per_s']:.1f} | "
            f"{p(e2e)} / {p(e2e, 'p90')} / {p(e2e, 'p99')} / {p(e2e, 'max')} | {p('queue_ms')} | "
            f"{p('enrich_ms')} | {p('model_ms')} | {p('publish_ms')} | {r['cpu_ms_per_turn']} |"
        )
