"""Guarded partials on the chat page: the real stack, a Gemini pipeline against the local Gemini server
(streaming ``streamGenerateContent?alt=sse``), the web server and Chromium.

- A model that writes another customer's e-mail halfway through its reply: the text up to it streams,
  the e-mail never reaches any delta nor any state of the page, and the guarded final replaces the
  streaming bubble in place.
- Deltas delivered out of order, twice, past a gap, after the final, and for another session: the page
  shows them in seq order, once, never past the gap, never in the other session, and logs each drop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser

from agents import guardrails
from contract.deltas import ReplyDelta
from contract.messages import AgentReply
from pipeline.options import DELTA_TOPIC
from stack.clients import publisher_client
from stack.emulators import LocalStack
from stack.service import PipelineProcess, pipeline_command
from tests.gemini_server import GeminiServer, Reply
from tests.test_web_chat import (  # noqa: F401 - fixtures
    ARTIFACTS,
    FIRST_REPLY_S,
    assert_no_duplicates,
    assert_no_page_errors,
    browser,
    new_chat,
    ops,
    playwright,
    publish_reply,
    start_web,
)
from tests.web_streaming_page import (
    both_at_once,
    dropped,
    final_index,
    frames,
    install_recorder,
    stream_texts,
)

pytestmark = pytest.mark.e2e

OTHER_EMAIL = "dana.other@example.org"
LEAK_TEXT = (
    "Sure, I can help with that. Let me see what I have here. "
    f"The other customer's address is {OTHER_EMAIL}, as you asked. Anything else I can do?"
)


@pytest.fixture(scope="module")
def gemini() -> Iterator[GeminiServer]:
    with GeminiServer() as server:
        server.stream_delay_s = 0.25  # slow enough that each chunk is its own visible step
        yield server


@pytest.fixture(scope="module")
def gem_web(seeded_stack: LocalStack, gemini: GeminiServer) -> Iterator[str]:
    extra = [f"--gemini_base_url={gemini.url}", "--quiet_window_s=0.5", "--max_hold_s=2", "--max_agent_steps=3"]
    proc = PipelineProcess(
        pipeline_command(seeded_stack.bigquery_endpoint, "gemini", extra),
        {**seeded_stack.env, "GOOGLE_API_KEY": "test-key-not-secret"},
        seeded_stack.log_dir / "pipeline-web-gemini.log",
    ).start()
    server, base = start_web(seeded_stack, "web-gemini")
    try:
        yield base
    finally:
        server.stop()
        alive, tail = proc.alive(), proc.log_tail()
        proc.stop()
        assert alive, f"the pipeline died during the test:\n{tail}"


def test_another_customers_email_is_never_visible(browser: Browser, gem_web: str, gemini: GeminiServer) -> None:  # noqa: F811
    gemini.script("leaky", Reply.text(LEAK_TEXT))
    chat = new_chat(browser, gem_web)
    install_recorder(chat.page)
    chat.start("C0002")
    chat.send("leaky question about an address")
    ids = chat.wait_sent(1)
    chat.wait_answered(ids, FIRST_REPLY_S)
    [reply] = chat.replies()
    seen = frames(chat.page)
    assert seen, "the recorder saw nothing"
    assert all(OTHER_EMAIL not in f["text"] and "dana" not in f["text"] for f in seen), "the e-mail was visible"
    texts = [t for t in stream_texts(seen, reply["turn_id"]) if t != "…"]
    assert texts and texts[-1] == "Sure, I can help with that. Let me see what I have here.", texts
    # The guarded final (the e-mail redacted), in the streaming bubble's place: a replacement, not a flash.
    assert guardrails.REDACTED_EMAIL in reply["text"] and OTHER_EMAIL not in reply["text"]
    done = final_index(seen, reply["turn_id"])
    assert done is not None and not both_at_once(seen, reply["turn_id"])
    before = [it for it in seen[done - 1]["items"] if it["turn_id"] == reply["turn_id"]]
    after = [it for it in seen[done]["items"] if it["turn_id"] == reply["turn_id"]]
    assert before and before[0]["streaming"] and after[0]["index"] == before[0]["index"]
    ARTIFACTS.mkdir(exist_ok=True)
    chat.page.screenshot(path=str(ARTIFACTS / "web_streaming_guarded.png"))
    assert_no_duplicates(chat)
    assert_no_page_errors(chat)
    chat.page.context.close()


def publish_deltas(project: str, deltas: list[ReplyDelta]) -> None:
    with publisher_client() as pub:
        topic = pub.topic_path(project, DELTA_TOPIC)
        for d in deltas:
            pub.publish(topic, d.to_bytes(), **d.attributes()).result(timeout=30)


def test_out_of_order_duplicated_and_stray_deltas(
    browser: Browser,  # noqa: F811
    gem_web: str,
    gemini: GeminiServer,
    seeded_stack: LocalStack,
) -> None:
    marker = f"slowpoke-{uuid.uuid4().hex[:6]}"
    gemini.script(marker, Reply.slow(20, Reply.text("The real answer, at last.")))
    a, b = new_chat(browser, gem_web), new_chat(browser, gem_web)
    for c in (a, b):
        install_recorder(c.page)
    sa, sb = a.start("C0003"), b.start("C0004")
    a.send(f"{marker} tell me something")
    a.wait_sent(1)  # now a turn of session A is in flight (its model call takes 20 s)
    turn = f"{sa}#synthetic"

    def delta(seq: int, text: str, session: str = sa, turn_id: str = turn, **kw: Any) -> ReplyDelta:
        return ReplyDelta(session_id=session, turn_id=turn_id, seq=seq, text=text, **kw)

    pieces = {1: "Alpha,", 2: " bravo,", 3: " charlie.", 4: " delta."}
    order = [3, 1, 1, 4, 2, 2]
    publish_deltas(seeded_stack.project, [delta(s, pieces[s]) for s in order])
    # Another session's turn, addressed to A's session, and a delta of B's own session while B waits for nothing.
    publish_deltas(
        seeded_stack.project,
        [delta(5, " leaked", turn_id=f"{sb}#x"), delta(1, "stray", session=sb, turn_id=f"{sb}#y")],
    )
    a.page.wait_for_function(
        "t => [...document.querySelectorAll('li[data-streaming=yes] .stream-text')].some(e => e.innerText === t)",
        arg="Alpha, bravo, charlie. delta.",
        timeout=15_000,
    )
    # A gap: seq 6 is missing, seq 7 waits and is never shown.
    publish_deltas(seeded_stack.project, [delta(7, " golf.")])
    time.sleep(1.0)
    final = AgentReply(session_id=sa, turn_id=turn, turn_index=7, answers=[], text="Alpha, bravo, charlie. delta.",
                       model="gemini-fake")  # fmt: skip
    publish_reply(seeded_stack.project, final)
    a.page.wait_for_selector(f"li.reply[data-turn-id='{turn}']:not([data-streaming])")
    before = ops(gem_web)["dropped_deltas"].get("after the final", 0)
    publish_deltas(seeded_stack.project, [delta(8, " hotel.")])
    deadline = time.monotonic() + 15
    while ops(gem_web)["dropped_deltas"].get("after the final", 0) <= before:
        assert time.monotonic() < deadline, "the delta after the final never reached the web server"
        time.sleep(0.2)

    seen_a = frames(a.page)
    shown = [t for t in stream_texts(seen_a, turn) if t != "…"]
    # Whatever order Pub/Sub delivered them in, the page only ever showed seq-ordered prefixes, growing.
    prefixes = ["Alpha,", "Alpha, bravo,", "Alpha, bravo, charlie.", "Alpha, bravo, charlie. delta."]
    assert shown and all(t in prefixes for t in shown) and shown[-1] == prefixes[-1], shown
    assert [prefixes.index(t) for t in shown] == sorted({prefixes.index(t) for t in shown}), shown
    assert all("golf" not in f["text"] and "hotel" not in f["text"] and "leaked" not in f["text"] for f in seen_a)
    assert not both_at_once(seen_a, turn)
    reasons_a = {(d["reason"], d["seq"]) for d in dropped(a.page)}
    assert {("duplicate", 1), ("duplicate", 2), ("seq gap", 7)} <= reasons_a, reasons_a
    # B never showed anything of A's (the server drops a turn of another session), nor its own stray delta.
    seen_b = frames(b.page)
    assert all("Alpha" not in f["text"] and "stray" not in f["text"] for f in seen_b)
    assert ("unknown turn", 1) in {(d["reason"], d["seq"]) for d in dropped(b.page)}
    assert ops(gem_web)["dropped_deltas"].get("turn of another session", 0) >= 1
    assert [r["text"].count("Alpha, bravo, charlie. delta.") for r in a.replies()] == [1]
    assert_no_page_errors(a, b)
    a.page.context.close()
    b.page.context.close()
