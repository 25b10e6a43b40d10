"""A SmolLM2 free-text reply streams onto the chat page: the real stack, pipeline, web server and Chromium.

The pipeline runs the ``smollm2`` backend (llama.cpp in the worker); "hi, how are you?" routes to the
chat route, whose reply is a text step: its deltas reach the page, released by clause, before the
final reply replaces them. Every state the page goes through is recorded (``web_streaming_page``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

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
    extra = ["--quiet_window_s=1.0", "--max_hold_s=4", "--model_threads=1"]
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


def test_smollm2_free_text_reply_appears_in_increments(browser: Browser, smol_web: str) -> None:  # noqa: F811
    chat = new_chat(browser, smol_web)
    install_recorder(chat.page)
    chat.start("C0001")
    chat.send("hi, how are you?")
    ids = chat.wait_sent(1)
    chat.wait_answered(ids, FIRST_REPLY_S)
    [reply] = chat.replies()
    seen = frames(chat.page)
    texts = stream_texts(seen, reply["turn_id"])
    shown = [t for t in texts if t != "…"]
    assert len(shown) >= 3, f"expected at least 3 increments before the final, saw {texts!r}"
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:], strict=False)), shown  # each one grows the text
    done = final_index(seen, reply["turn_id"])
    assert done is not None and not both_at_once(seen, reply["turn_id"])
    assert shown[-1] in reply["text"], (shown[-1], reply["text"])
    assert not chat.page.query_selector("li[data-streaming=yes]"), "the final replaced the streaming bubble"
    ARTIFACTS.mkdir(exist_ok=True)
    chat.page.screenshot(path=str(ARTIFACTS / "web_streaming_smollm2.png"))
    assert_no_duplicates(chat)
    assert_no_page_errors(chat)
    chat.page.context.close()
