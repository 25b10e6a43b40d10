"""A SmolLM2 free-text reply streams onto the chat page: the real stack, pipeline, web server and Chromium.

The pipeline runs the ``smollm2`` backend (llama.cpp in the worker) on prompt version support_tools_v1;
"that's all, thanks" routes to the chat route, whose reply is a text step: its deltas reach the page,
released by sentence and clause, before the final reply replaces them. Every state the page goes through is
recorded (``web_streaming_page``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from contract.eval_rows import TURNS_TABLE
from pipeline.options import EVAL_DATASET
from stack.clients import bigquery_client
from stack.emulators import LocalStack
from stack.service import PipelineProcess, pipeline_command
from tests.test_web_chat import (  # noqa: F401 - fixtures
    ARTIFACTS,
    assert_no_duplicates,
    assert_no_page_errors,
    browser,
    new_chat,
    playwright,
    start_web,
)
from tests.web_streaming_page import both_at_once, final_index, frames, install_recorder, stream_texts

pytestmark = pytest.mark.e2e

FIRST_REPLY_S = 180.0  # the pipeline starts and loads the model first


@pytest.fixture(scope="module")
def smol_web(seeded_stack: LocalStack) -> Iterator[str]:
    # support_tools_v1: its chat route lets SmolLM2 write its own small talk (the default version's greeting
    # is the pack's own text, released whole).
    extra = ["--quiet_window_s=1.0", "--max_hold_s=4", "--model_threads=1", "--prompt_version=support_tools_v1"]
    proc = PipelineProcess(
        pipeline_command(seeded_stack.bigquery_endpoint, "smollm2", extra),
        seeded_stack.env,
        seeded_stack.log_dir / "pipeline-web-smollm2.log",
    ).start()
    server, base = start_web(seeded_stack, "web-smollm2")
    try:
        yield base
    finally:
        server.stop()
        alive, tail = proc.alive(), proc.log_tail()
        proc.stop()
        assert alive, f"the pipeline died during the test:\n{tail}"


def test_smollm2_free_text_reply_appears_in_increments(
    browser: Browser,  # noqa: F811
    smol_web: str,
    seeded_stack: LocalStack,
) -> None:
    chat = new_chat(browser, smol_web)
    install_recorder(chat.page)
    chat.start("C0001")
    # Why this message: SmolLM2-135M's greedy reply to it opens with three sentences that state nothing ("You're
    # welcome! I'm glad to help. If you have any more questions or need further assistance ... don't hesitate to
    # ask."), then writes "Good luck on the next delivery of a new shipment ...", which no source gave. Its other
    # small talk ("hi, how are you?" and 47 more measured) states an unsourced fact by its second or third sentence:
    # the release stops after 0-2 (tests/test_streaming.py pins these three with the recorded text). The
    # pipeline is fresh, so this is its model's first generation (a cached prompt decodes slightly differently).
    chat.send("that's all, thanks")
    ids = chat.wait_sent(1)
    chat.wait_answered(ids, FIRST_REPLY_S)
    [reply] = chat.replies()
    seen = frames(chat.page)
    texts = stream_texts(seen, reply["turn_id"])
    shown = [t for t in texts if t != "…"]
    # The reply shows sentence by sentence while it stays grounded (agents.grounding); the release stops at the
    # first sentence that states what nothing in the turn gave, and the final is the grounded sentences shown
    # (small talk keeps its grounded lead, agents.finish), so the streaming bubble becomes the final.
    assert len(shown) >= 3, f"expected at least 3 increments before the final, saw {texts!r}"
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:], strict=False)), shown  # each one grows the text
    done = final_index(seen, reply["turn_id"])
    assert done is not None and not both_at_once(seen, reply["turn_id"])
    assert not chat.page.query_selector("li[data-streaming=yes]"), "the final replaced the streaming bubble"
    # The eval row records the wait for the first visible text, shorter than the wait for the final.
    bq = bigquery_client(seeded_stack.project, seeded_stack.bigquery_endpoint)
    sql = f"SELECT turn_id, first_text_ms, total_ms, deltas FROM `{seeded_stack.project}.{EVAL_DATASET}.{TURNS_TABLE}`"
    row = None
    deadline = time.monotonic() + 60
    while row is None and time.monotonic() < deadline:
        row = next((dict(r) for r in bq.query(sql).result() if r["turn_id"] == reply["turn_id"]), None)
        time.sleep(0 if row else 1)
    assert row is not None, "no eval row for the turn"
    assert row["deltas"] >= len(shown) and 0 < row["first_text_ms"] < row["total_ms"], row
    ARTIFACTS.mkdir(exist_ok=True)
    chat.page.screenshot(path=str(ARTIFACTS / "web_streaming_smollm2.png"))
    assert_no_duplicates(chat)
    assert_no_page_errors(chat)
    chat.page.context.close()
