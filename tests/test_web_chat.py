"""The chat frontend end to end, in a real headless Chromium.

Real everything: the emulators (``seeded_stack``), the streaming pipeline as a
subprocess with the ``instant`` model backend, the web server as a subprocess
(``python -m web``), and the page driven through Playwright against Debian's
``/usr/bin/chromium`` (CI installs the ``chromium`` apt package and the
``playwright`` pip package; ``playwright install`` is never run).

Screenshots land in ``artifacts/`` (gitignored): ``web_chat.png`` (a burst of
three messages answered by one turn), ``web_chat_kinds.png`` (hand-off and
error replies), ``web_ops.png`` (the operator view).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from contract.messages import AgentReply, ReplyKind, TurnTimings
from pipeline.options import INBOUND_TOPIC, REPLY_TOPIC
from stack.clients import publisher_client, subscriber_client
from stack.emulators import LocalStack, free_port
from stack.service import REPO, PipelineProcess, pipeline_command
from tools.packs import load_pack

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIRST_REPLY_S = 90.0  # the first turn also waits for the pipeline to start
REPLY_S = 45.0
QUIET_WINDOW_S = 2.0  # wide enough that a typed burst is one turn even on a busy 2-core machine


def pipeline_command_instant(bigquery_endpoint: str, extra: list[str]) -> list[str]:
    return pipeline_command(bigquery_endpoint, "instant", extra)


# ---------------------------------------------------------------------------
# Processes and browser
# ---------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


def start_web(stack: LocalStack, name: str) -> tuple[PipelineProcess, str]:
    """``python -m web`` on a free port, in its own process group; returns it and its base URL once healthy."""
    port = free_port()
    server = PipelineProcess(
        [sys.executable, "-m", "web", "--port", str(port), "--log-level", "warning"],
        stack.env,
        stack.log_dir / f"{name}.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while http_get(f"{base}/healthz")[0] != 200:
        if not server.alive():
            pytest.fail(f"web server exited early:\n{server.log_tail()}", pytrace=False)
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"web server not healthy after 60 s:\n{server.log_tail()}", pytrace=False)
        time.sleep(0.2)
    return server, base


@pytest.fixture(scope="module")
def pipeline(seeded_stack: LocalStack) -> Iterator[PipelineProcess]:
    extra = [f"--quiet_window_s={QUIET_WINDOW_S}", "--max_hold_s=8"]
    log = seeded_stack.log_dir / "pipeline-web.log"
    proc = PipelineProcess(
        pipeline_command_instant(seeded_stack.bigquery_endpoint, extra), seeded_stack.env, log
    ).start()
    try:
        yield proc
    finally:
        alive = proc.alive()
        tail = proc.log_tail()
        proc.stop()
        assert alive, f"the pipeline died during the web tests:\n{tail}"


@pytest.fixture(scope="module")
def web(seeded_stack: LocalStack, pipeline: PipelineProcess) -> Iterator[str]:
    server, base = start_web(seeded_stack, "web")
    try:
        yield base
    finally:
        server.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


# ---------------------------------------------------------------------------
# The page, as a user sees it
# ---------------------------------------------------------------------------


@dataclass
class ChatPage:
    page: Page
    base: str
    page_errors: list[str] = field(default_factory=list)

    def start(self, customer: str) -> str:
        self.page.goto(f"{self.base}/?customer={customer}")
        self.page.wait_for_selector(f'#customer option[value="{customer}"]', state="attached")
        assert self.page.input_value("#customer") == customer
        self.page.click("#start-btn")
        self.wait_connected()
        return self.session_id()

    def wait_connected(self) -> None:
        self.page.wait_for_selector("#conn[data-state=open]", timeout=15_000)

    def session_id(self) -> str:
        return self.page.inner_text("#session-label").strip()

    def send(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def message_ids(self) -> list[str]:
        return self.page.eval_on_selector_all("li.msg", "els => els.map(e => e.dataset.messageId)")

    def replies(self) -> list[dict[str, Any]]:
        return self.page.eval_on_selector_all(
            "li.reply",
            """els => els.map(e => ({turn_id: e.dataset.turnId, kind: e.dataset.kind, session_id: e.dataset.sessionId,
                answers: (e.dataset.answers || '').split(' ').filter(Boolean), text: e.innerText}))""",
        )

    def wait_sent(self, count: int) -> list[str]:
        """Wait until ``count`` messages are acknowledged by the server (published); their ids in page order."""
        self.page.wait_for_function(
            "n => document.querySelectorAll('li.msg:not(.sending)').length >= n", arg=count, timeout=15_000
        )
        return self.message_ids()

    def wait_answered(self, ids: list[str], timeout_s: float = REPLY_S) -> None:
        self.page.wait_for_function(
            """ids => {
                const answered = new Set([...document.querySelectorAll('li.reply')]
                    .flatMap(r => (r.dataset.answers || '').split(' ').filter(Boolean)));
                return ids.every(id => answered.has(id));
            }""",
            arg=ids,
            timeout=timeout_s * 1000,
        )

    def pending_visible(self) -> bool:
        return self.page.is_visible("#pending")


def new_chat(browser: Browser, base: str) -> ChatPage:
    context = browser.new_context(viewport={"width": 900, "height": 760})
    page = context.new_page()
    page.set_default_timeout(15_000)
    chat = ChatPage(page, base)
    page.on("pageerror", lambda e: chat.page_errors.append(str(e)))
    return chat


def assert_no_page_errors(*chats: ChatPage) -> None:
    for c in chats:
        assert c.page_errors == [], c.page_errors


def assert_no_duplicates(chat: ChatPage) -> None:
    ids = chat.message_ids()
    turns = [r["turn_id"] for r in chat.replies()]
    assert len(ids) == len(set(ids)), f"duplicate messages on the page: {ids}"
    assert len(turns) == len(set(turns)), f"duplicate replies on the page: {turns}"


def publish_reply(project: str, reply: AgentReply) -> None:
    """Put a reply on the reply topic the way the pipeline does (attributes, ordering key)."""
    with publisher_client(enable_message_ordering=True) as pub:
        pub.publish(
            pub.topic_path(project, REPLY_TOPIC),
            reply.to_bytes(),
            ordering_key=reply.session_id,
            session_id=reply.session_id,
            kind=str(reply.kind),
            turn_id=reply.turn_id,
        ).result(timeout=30)


def ops(base: str) -> dict[str, Any]:
    status, body = http_get(f"{base}/api/ops")
    assert status == 200
    return json.loads(body)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_burst_of_three_is_answered_by_one_turn(browser: Browser, web: str) -> None:
    chat = new_chat(browser, web)
    session = chat.start("C0001")
    assert session.startswith("web-")
    assert f"session={session}" in chat.page.url
    for text in ("hi", "where is my order?", "it was supposed to arrive yesterday"):
        chat.send(text)
    ids = chat.wait_sent(3)
    assert len(ids) == 3
    assert chat.pending_visible(), "sent messages not yet answered must show the pending indicator"
    assert "answering 3 messages" in chat.page.inner_text("#pending-text")

    chat.wait_answered(ids, FIRST_REPLY_S)
    replies = chat.replies()
    assert len(replies) == 1, replies
    assert replies[0]["answers"] == ids  # one turn, all three, in sent order
    assert replies[0]["kind"] == "reply" and replies[0]["session_id"] == session
    assert "it was supposed to arrive yesterday" in replies[0]["text"]  # the instant backend quotes the turn
    chat.page.wait_for_selector("#pending", state="hidden")
    assert chat.page.get_attribute(f"li.msg[data-message-id='{ids[0]}']", "data-status") == "answered"
    ARTIFACTS.mkdir(exist_ok=True)
    chat.page.screenshot(path=str(ARTIFACTS / "web_chat.png"))
    assert_no_page_errors(chat)
    chat.page.context.close()


HEX_TO_LETTERS = str.maketrans("0123456789abcdef", "ghijklmnopqrstuv")


def test_two_customers_never_see_each_others_replies(browser: Browser, web: str) -> None:
    a, b = new_chat(browser, web), new_chat(browser, web)
    sa, sb = a.start("C0002"), b.start("C0003")
    assert sa != sb
    # Letters only: a hex marker such as "c12345" reads as a customer id, and the input guardrail then
    # (rightly) refuses the message instead of quoting it.
    ma, mb = (f"{name}-{uuid.uuid4().hex[:6].translate(HEX_TO_LETTERS)}" for name in ("alpha", "bravo"))
    # Interleaved, so both sessions are in flight in the pipeline (and on the one reply subscription) together.
    a.send(f"{ma} first")
    b.send(f"{mb} first")
    ids_a, ids_b = a.wait_sent(1), b.wait_sent(1)
    a.wait_answered(ids_a)
    b.wait_answered(ids_b)
    a.send(f"{ma} second")
    b.send(f"{mb} second")
    ids_a, ids_b = a.wait_sent(2), b.wait_sent(2)
    a.wait_answered(ids_a)
    b.wait_answered(ids_b)
    time.sleep(1.0)  # a misrouted reply would have arrived by now

    for chat, session, mine, theirs, ids in ((a, sa, ma, mb, ids_a), (b, sb, mb, ma, ids_b)):
        replies = chat.replies()
        assert len(replies) == 2, replies
        assert {r["session_id"] for r in replies} == {session}
        assert all(mine in r["text"] and theirs not in r["text"] for r in replies), [r["text"] for r in replies]
        assert theirs not in chat.page.inner_text("#log")
        assert set(chat.message_ids()) == set(ids)
        assert_no_duplicates(chat)
    assert "C0002" in a.page.inner_text("#who") and "C0003" in b.page.inner_text("#who")
    assert_no_page_errors(a, b)
    a.page.context.close()
    b.page.context.close()


def test_reload_mid_conversation_shows_history_once(browser: Browser, web: str, seeded_stack: LocalStack) -> None:
    chat = new_chat(browser, web)
    session = chat.start("C0004")
    chat.send("do you ship to Norway?")
    first = chat.wait_sent(1)
    chat.wait_answered(first)
    chat.send("and how long does it take?")
    both = chat.wait_sent(2)
    assert chat.pending_visible()

    chat.page.reload()  # while the second turn is still being answered
    chat.wait_connected()
    assert chat.session_id() == session
    assert chat.message_ids() == both
    # Normally the second turn is still being answered here; on a slow machine its reply may already be in.
    assert [r["answers"] for r in chat.replies()] in ([first], [first, [both[1]]])
    chat.wait_answered(both)
    replies = chat.replies()
    assert [r["answers"] for r in replies] == [first, [both[1]]]
    assert_no_duplicates(chat)

    # Pub/Sub delivers the first reply again (at-least-once): stored and shown once.
    before = ops(web)["duplicate_turns"]
    reply0 = AgentReply(
        session_id=session,
        turn_id=replies[0]["turn_id"],
        turn_index=0,
        answers=first,
        text="a redelivery",
        model="instant",
    )
    publish_reply(seeded_stack.project, reply0)
    deadline = time.monotonic() + 20
    while ops(web)["duplicate_turns"] <= before:
        assert time.monotonic() < deadline, "the redelivered reply never reached the web server"
        time.sleep(0.2)
    chat.page.reload()
    chat.wait_connected()
    assert chat.message_ids() == both
    assert [r["turn_id"] for r in chat.replies()] == [r["turn_id"] for r in replies]
    assert "a redelivery" not in chat.page.inner_text("#log")
    assert not chat.pending_visible()
    stored = chat.page.evaluate("() => JSON.parse(sessionStorage.getItem('supportflow.chat'))")
    assert stored["session_id"] == session and stored["customer_id"] == "C0004" and stored["outbox"] == []
    assert_no_page_errors(chat)
    chat.page.context.close()


def test_handoff_error_rejection_and_operator_view(browser: Browser, web: str, seeded_stack: LocalStack) -> None:
    """Kinds the instant model never produces (error, hand-off) come straight onto the reply topic, in the
    pipeline's shape; a malformed inbound payload goes through the real pipeline to the dead-letter topic."""
    chat = new_chat(browser, web)
    session = chat.start("C0005")
    chat.send("my parcel is damaged")
    ids = chat.wait_sent(1)
    chat.wait_answered(ids)

    def synthetic(index: int, kind: ReplyKind, text: str) -> AgentReply:
        return AgentReply(
            session_id=session,
            turn_id=f"{session}#{index}",
            turn_index=index,
            answers=[],
            kind=kind,
            text=text,
            model="instant",
            timings=TurnTimings(total_ms=1234.0),
        )

    publish_reply(seeded_stack.project, synthetic(90, ReplyKind.ERROR, "Sorry, something went wrong on our side."))
    publish_reply(seeded_stack.project, synthetic(91, ReplyKind.HANDOFF, "A colleague will take it from here."))
    chat.page.wait_for_selector("li.reply.kind-handoff")
    assert chat.page.is_visible("#handoff-banner")
    error = chat.page.locator("li.reply.kind-error")
    assert error.count() == 1 and "error" in error.inner_text().lower()
    assert error.evaluate("e => getComputedStyle(e).backgroundColor") != chat.page.locator(
        "li.reply.kind-reply"
    ).evaluate("e => getComputedStyle(e).backgroundColor")

    # The server checks messages against the contract before publishing: a blank one is rejected with the reason.
    reason = chat.page.evaluate(
        """session => new Promise((resolve, reject) => {
            const token = JSON.parse(sessionStorage.getItem('supportflow.chat')).token;
            const ws = new WebSocket(`ws://${location.host}/ws?session_id=${session}&token=${token}`);
            ws.onmessage = (ev) => {
                const m = JSON.parse(ev.data);
                if (m.type === 'hello') ws.send(JSON.stringify({type: 'send', message_id: 'blank-1', text: '   '}));
                if (m.type === 'rejected') { ws.close(); resolve(m.reason); }
            };
            ws.onerror = reject;
        })""",
        session,
    )
    assert "blank" in reason
    ARTIFACTS.mkdir(exist_ok=True)
    chat.page.screenshot(path=str(ARTIFACTS / "web_chat_kinds.png"))

    with publisher_client() as pub:
        pub.publish(
            pub.topic_path(seeded_stack.project, INBOUND_TOPIC), b'{"session_id": "broken', source="web-test"
        ).result(timeout=30)
    page = chat.page.context.new_page()
    page.goto(f"{web}/ops")
    page.wait_for_function("() => Number(document.getElementById('v-dead').textContent) >= 1", timeout=REPLY_S * 1000)
    snap = ops(web)
    assert snap["turns"] >= 3 and snap["handoffs"] >= 1 and snap["errors"] >= 1 and snap["dead_letters"] >= 1
    assert snap["p50_ms"] is not None and snap["p99_ms"] >= snap["p50_ms"]
    assert page.inner_text("#live") == "live"
    assert int(page.inner_text("#v-turns")) >= 3
    assert page.locator("#chart rect").count() >= 1
    assert "ParseInbound" in page.inner_text("#dl-rows")
    page.screenshot(path=str(ARTIFACTS / "web_ops.png"), full_page=True)
    assert_no_page_errors(chat)
    chat.page.context.close()


def test_demo_login_finds_any_seeded_customer(browser: Browser, web: str, seeded_stack: LocalStack) -> None:
    from stack.clients import firestore_client

    name = firestore_client(seeded_stack.project).collection("customers").document("C0042").get().get("name")
    chat = new_chat(browser, web)
    chat.page.goto(web)
    assert "DEMO login" in chat.page.inner_text("#demo-label")
    # The page names the running pack's business in its own words (GET /api/pack), none of its own.
    shop = load_pack("shop")
    chat.page.wait_for_function("() => document.getElementById('business').textContent !== ''")
    assert chat.page.inner_text("#business") == f"· {shop.title}"
    assert chat.page.get_attribute("#customer-search", "placeholder") == f"id or name, e.g. {shop.customer_id.example}"
    listed = ["account", *(c.name for c in shop.context)]
    assert chat.page.inner_text("#sees").endswith(f"own {', '.join(listed[:-1])} and {listed[-1]}.")
    chat.page.fill("#customer-search", name.split()[-1])  # by (part of) the name
    chat.page.wait_for_selector("#customer option[value=C0042]", state="attached")
    chat.page.fill("#customer-search", "C0042")  # by id
    chat.page.wait_for_function("() => document.querySelectorAll('#customer option').length === 1")
    chat.page.click("#start-btn")
    chat.wait_connected()
    assert chat.page.inner_text("#who") == f"Customer C0042 · {name}"
    chat.page.reload()
    chat.wait_connected()
    assert chat.page.inner_text("#who") == f"Customer C0042 · {name}"
    assert_no_page_errors(chat)
    chat.page.context.close()


def test_replies_out_of_order_and_without_ordering_keys_show_in_turn_order(
    browser: Browser, web: str, seeded_stack: LocalStack
) -> None:
    """As on Dataflow, where WriteToPubSub drops ordering keys: turns 3, 1, 2 arrive in that order."""
    chat = new_chat(browser, web)
    session = chat.start("C0006")
    chat.send("hello")
    ids = chat.wait_sent(1)
    chat.wait_answered(ids)
    with publisher_client() as pub:  # no ordering key, no ordering
        for index in (3, 1, 2, 1):  # and one redelivery
            reply = AgentReply(session_id=session, turn_id=f"{session}#late{index}", turn_index=index, answers=[],
                               text=f"turn number {index}", model="instant")  # fmt: skip
            pub.publish(pub.topic_path(seeded_stack.project, REPLY_TOPIC), reply.to_bytes()).result(timeout=30)
            time.sleep(0.3)  # arrive one by one, in this order
    chat.page.wait_for_function("() => document.querySelectorAll('li.reply').length === 4", timeout=REPLY_S * 1000)
    assert [r["turn_id"].rsplit("#", 1)[1] for r in chat.replies()][1:] == ["late1", "late2", "late3"]
    chat.page.reload()  # the server's history is in the same order
    chat.wait_connected()
    assert [r["turn_id"].rsplit("#", 1)[1] for r in chat.replies()][1:] == ["late1", "late2", "late3"]
    assert_no_duplicates(chat)
    assert_no_page_errors(chat)
    chat.page.context.close()


def test_server_owns_its_subscriptions(browser: Browser, seeded_stack: LocalStack) -> None:
    """Each web process pulls from subscriptions of its own, and deletes them on SIGTERM, even with an
    operator view's endless event stream open."""
    server, base = start_web(seeded_stack, "web-lifecycle")
    try:
        subs = json.loads(http_get(f"{base}/healthz")[1])["subscriptions"]
        assert len(subs) == 3 and all("-web-" in s for s in subs)  # replies, dead letters, reply deltas
        with subscriber_client() as sub:
            for path in subs:
                sub.get_subscription(subscription=path, timeout=10)
            reply_sub = sub.get_subscription(subscription=subs[0], timeout=10)
            assert reply_sub.enable_message_ordering
        page = browser.new_page()
        page.goto(f"{base}/ops")
        page.wait_for_selector("#live[data-state=open]")
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGTERM)
        t0 = time.monotonic()
        rc = server.proc.wait(timeout=15)
        assert time.monotonic() - t0 < 8, "the open event stream held up the shutdown"
        # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM with the clean-stop line is a clean stop.
        assert rc in (0, -signal.SIGTERM), server.log_tail()
        assert "supportflow web: stopped" in server.log_tail(), server.log_tail()
        page.close()
        with subscriber_client() as sub:
            listed = {s.name for s in sub.list_subscriptions(project=f"projects/{seeded_stack.project}", timeout=10)}
        assert not set(subs) & listed
    finally:
        if server.alive():
            server.stop()


def test_python_m_web_refuses_without_emulator() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-m", "web", "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "PUBSUB_EMULATOR_HOST is not set" in out.stderr
