"""The local stack against the real emulators: start, resources, one round trip per service, clean stop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from google.cloud import bigquery

from contract.eval_rows import EVAL_RUNS_TABLE, EVAL_SCHEMA_VERSION, EVAL_TRIALS_TABLE, TURNS_TABLE
from packs.shop.seed import (
    CUSTOMERS,
    DEFAULT_CUSTOMERS,
    HELP_ARTICLES,
    ORDERS,
    build_customer,
    customer_id,
    help_articles,
)
from pipeline.options import (
    DEAD_LETTER_SETTLE_SUBSCRIPTION,
    DEAD_LETTER_SUBSCRIPTION,
    EVAL_DATASET,
    HANDOFF_SUBSCRIPTION,
    HANDOFF_TOPIC,
    INBOUND_SUBSCRIPTION,
    INBOUND_TOPIC,
    REPLY_MEMORY_SUBSCRIPTION,
    REPLY_TOPIC,
)
from stack.clients import bigquery_client, firestore_client, publisher_client, subscriber_client
from stack.emulators import (
    DEFAULT_STATE_DIR,
    Emulator,
    LocalStack,
    StackError,
    _group_members,
    check_prerequisites,
    firestore_emulator,
    free_port,
    port_free,
    reap_stale,
)
from stack.resources import FRONTEND_REPLY_SUBSCRIPTION, create_subscription, delete_subscription, ensure_resources
from stack.service import DEFAULT_WEB_PORT, REPO, choose_web_port
from stack.service import main as stack_main
from tests.pubsub_pull import pull

BQ_VENV = DEFAULT_STATE_DIR / "bq-venv"


# -- preflight: no emulator is started by these --------------------------------------------------------------------


def test_prerequisites_are_present(bq_venv: Path) -> None:
    assert check_prerequisites(bq_venv=bq_venv) == []


def test_missing_emulator_binary_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-pubsub-emulator"
    stack = LocalStack(state_dir=tmp_path / "state", bq_venv=BQ_VENV, pubsub_bin=missing)
    with pytest.raises(StackError, match="Pub/Sub emulator binary missing: .*no-such-pubsub-emulator"):
        stack.start()
    assert not (tmp_path / "state" / "logs").exists()  # refused before launching anything


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bq_venv: Path) -> None:
    with pytest.raises(StackError, match="java not found .*no-such-java"):
        LocalStack(state_dir=tmp_path, bq_venv=bq_venv, java="no-such-java").start()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java on PATH
    problems = check_prerequisites(bq_venv=bq_venv)
    assert len(problems) == 1 and problems[0].startswith("java not found")


def test_missing_bq_venv_says_how_to_create_it(tmp_path: Path) -> None:
    problems = check_prerequisites(bq_venv=tmp_path / "bq-venv")
    assert len(problems) == 1 and "bqemulator" in problems[0] and "ensure_bq_venv" in problems[0]


# -- the running stack ---------------------------------------------------------------------------------------------


def test_env_points_at_the_stack(local_stack: LocalStack) -> None:
    env = local_stack.env
    assert set(env) == {
        "PUBSUB_EMULATOR_HOST",
        "FIRESTORE_EMULATOR_HOST",
        "BIGQUERY_EMULATOR_HOST",
        "GOOGLE_CLOUD_PROJECT",
    }
    assert env["PUBSUB_EMULATOR_HOST"].startswith("127.0.0.1:")
    assert env["BIGQUERY_EMULATOR_HOST"].startswith("http://127.0.0.1:")
    assert all(os.environ[k] == v for k, v in env.items())  # applied by the fixture
    assert local_stack.startup_s is not None and local_stack.startup_s < 60
    for emu in local_stack.emulators.values():
        assert emu.running and emu.log_path.is_file()
        assert emu.pid_file is not None and emu.pid_file.is_file()


def test_resources_exist_and_reply_subscriptions_are_ordered(local_stack: LocalStack) -> None:
    project = local_stack.project
    again = ensure_resources(project, local_stack.bigquery_endpoint)  # idempotent: a second run is a no-op
    assert set(again.subscriptions) == {
        INBOUND_SUBSCRIPTION,
        REPLY_MEMORY_SUBSCRIPTION,
        FRONTEND_REPLY_SUBSCRIPTION,
        DEAD_LETTER_SUBSCRIPTION,
        DEAD_LETTER_SETTLE_SUBSCRIPTION,
        HANDOFF_SUBSCRIPTION,
    }
    with subscriber_client() as sub:
        ordered = ((REPLY_MEMORY_SUBSCRIPTION, REPLY_TOPIC), (FRONTEND_REPLY_SUBSCRIPTION, REPLY_TOPIC))
        for name, topic in (*ordered, (HANDOFF_SUBSCRIPTION, HANDOFF_TOPIC)):
            got = sub.get_subscription(subscription=sub.subscription_path(project, name), timeout=10)
            assert got.enable_message_ordering is True
            assert got.topic == sub.topic_path(project, topic)
    assert set(again.tables) == {TURNS_TABLE, "sessions_v1", EVAL_RUNS_TABLE, EVAL_TRIALS_TABLE}


def test_emptying_a_subscription_drops_its_backlog_and_keeps_its_declaration(local_stack: LocalStack) -> None:
    from stack.resources import empty_subscriptions

    project = local_stack.project
    path = f"projects/{project}/subscriptions/{HANDOFF_SUBSCRIPTION}"
    with publisher_client(enable_message_ordering=True) as pub:
        topic = pub.topic_path(project, HANDOFF_TOPIC)
        pub.publish(topic, b"before", ordering_key="s1").result(timeout=10)
        empty_subscriptions(project, [HANDOFF_SUBSCRIPTION])
        pub.publish(topic, b"after", ordering_key="s1").result(timeout=10)
    assert [m.message.data for m in pull(path, want=2, timeout_s=5)] == [b"after"]
    with subscriber_client() as sub:
        assert sub.get_subscription(subscription=path, timeout=10).enable_message_ordering is True


def test_pubsub_publish_andpull(local_stack: LocalStack) -> None:
    project = local_stack.project
    name = f"test-stack-{uuid.uuid4().hex[:8]}"  # fresh: sees only what this test publishes
    path = create_subscription(project, name, INBOUND_TOPIC, ordering=True)
    try:
        publisher = publisher_client(enable_message_ordering=True)
        topic = publisher.topic_path(project, INBOUND_TOPIC)
        for i in range(3):
            publisher.publish(topic, f"hello {i}".encode(), ordering_key="s-1", session_id="s-1").result(timeout=10)
        got = pull(path, want=3)
        assert [m.message.data for m in got] == [b"hello 0", b"hello 1", b"hello 2"]
        assert all(m.message.attributes["session_id"] == "s-1" and m.message.ordering_key == "s-1" for m in got)
    finally:
        delete_subscription(project, name)


def test_seeded_customer_reads_back(seeded_stack: LocalStack) -> None:
    db = firestore_client(seeded_stack.project)
    expected = build_customer(1)
    snap = db.collection(CUSTOMERS).document("C0001").get(timeout=10)
    assert snap.exists and snap.to_dict() == expected.profile
    orders = {o.id: o.to_dict() for o in snap.reference.collection(ORDERS).stream(timeout=10)}
    assert orders == expected.orders
    # C0001..C0006: newest order is placed, shipped, delayed, delivered, returned, refunded in turn.
    newest = db.collection(CUSTOMERS).document("C0003").collection(ORDERS).order_by("placed_at").limit_to_last(1)
    assert [o.get("status") for o in newest.get(timeout=10)] == ["delayed"]
    # Count the seed's own ids: other tests may add customers of their own to the shared stack.
    seeded = {customer_id(i) for i in range(1, DEFAULT_CUSTOMERS + 1)}
    count = sum(1 for ref in db.collection(CUSTOMERS).list_documents() if ref.id in seeded)
    assert count == DEFAULT_CUSTOMERS
    assert {a.id for a in db.collection(HELP_ARTICLES).stream(timeout=10)} == set(help_articles())


def test_seed_cli_is_idempotent(seeded_stack: LocalStack) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "stack", "seed", "--customers", "5"], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert "seeded 5 customers" in out.stdout
    db = firestore_client(seeded_stack.project)
    seeded = {customer_id(i) for i in range(1, DEFAULT_CUSTOMERS + 1)}
    assert sum(1 for ref in db.collection(CUSTOMERS).list_documents() if ref.id in seeded) == DEFAULT_CUSTOMERS
    assert db.collection(CUSTOMERS).document("C0002").get(timeout=10).to_dict() == build_customer(2).profile


def test_bigquery_insert_and_query(local_stack: LocalStack) -> None:
    project = local_stack.project
    bq = bigquery_client(project, local_stack.bigquery_endpoint)
    session_id = f"s-{uuid.uuid4().hex[:8]}"
    row = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "session_id": session_id,
        "turn_id": f"{session_id}#0",
        "turn_index": 0,
        "customer_hash": "ab" * 32,
        "answers": ["m-1", "m-2"],
        "kind": "reply",
        "model": "instant",
        "total_ms": 12.5,
        "flags": [],
        "created_at": "2026-11-25T12:00:00Z",
    }
    table = f"{project}.{EVAL_DATASET}.{TURNS_TABLE}"
    assert bq.insert_rows_json(table, [row], row_ids=[row["turn_id"]]) == []
    job = bq.query(
        f"SELECT turn_id, answers, total_ms FROM `{table}` WHERE session_id = @sid",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("sid", "STRING", session_id)]
        ),
    )
    rows = [dict(r) for r in job.result(timeout=30)]
    assert rows == [{"turn_id": f"{session_id}#0", "answers": ["m-1", "m-2"], "total_ms": 12.5}]


# -- process management --------------------------------------------------------------------------------------------


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The Firestore launcher is a bash script that forks java: killing its pid alone would leak the JVM.
    emu = firestore_emulator(free_port(), tmp_path / "logs", "test-project")
    emu.launch()
    try:
        emu.wait_ready(timeout_s=60)
        assert emu.proc is not None
        pgid = emu.proc.pid
        assert len(_group_members(pgid)) >= 2  # bash + java
    finally:
        emu.stop()
    assert _group_members(pgid) == []


def test_reap_stale_kills_orphans_of_a_dead_owner(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Process management only, so a plain process group stands in for an emulator: the launcher exits at once
    # and leaves its child in the group, as a JVM outlives a SIGKILLed owner.
    orphan = Emulator(
        name="orphan",
        argv=["bash", "-c", "sleep 300 & exit 0"],
        port=0,
        log_path=tmp_path / "orphan.log",
        probe=lambda: False,
        run_dir=run_dir,
    )
    orphan.launch()
    assert orphan.proc is not None and orphan.pid_file is not None
    pgid = orphan.proc.pid
    orphan.proc.wait(timeout=10)
    assert len(_group_members(pgid)) == 1  # the sleep
    dead = subprocess.Popen(["true"])
    dead.wait()
    info = orphan.pid_file.read_text().replace(f'"owner": {os.getpid()}', f'"owner": {dead.pid}')
    orphan.pid_file.write_text(info)  # as if the stack's owner had been SIGKILLed
    try:
        assert reap_stale(run_dir) == ["orphan"]
        assert _group_members(pgid) == []
        assert not orphan.pid_file.exists()
    finally:
        orphan.stop()


# -- `python -m stack up`: arguments, help, a second stack beside a first ----------------------------------------


def _up_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        stack_main(["up", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m stack up"), err  # up's usage, not the top level's
    return err


def test_up_rejects_bad_arguments_with_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--customers: must be at least 1, got -5" in _up_error(capsys, "--customers", "-5")
    assert "--customers: must be at least 1, got 0" in _up_error(capsys, "--customers", "0")
    assert "not a whole number: 'many'" in _up_error(capsys, "--customers", "many")
    err = _up_error(capsys, "--customer", "C9999")
    assert "--customer C9999 is not seeded: --customers 300 seeds C0001..C0300" in err
    assert "C0012 is not seeded: --customers 10 seeds C0001..C0010" in _up_error(
        capsys, "--customers", "10", "--customer", "C0012"
    )
    assert "unrecognized arguments: --custmers 5" in _up_error(capsys, "--custmers", "5")
    assert "a port is 0..65535" in _up_error(capsys, "--web-port", "70000")
    assert "--pipeline-args: No closing quotation" in _up_error(capsys, "--pipeline-args", '"--model_path=x')


def test_up_help_describes_it_and_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        stack_main(["up", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert "Start the whole service on this machine" in out
    assert "synthetic customers to seed (default: the pack's; the shop seeds 300)" in out
    assert "(default: the pack's demo customer; the shop's seeded ids are C0001..C0300)" in out
    assert "(default: smollm2)" in out and "(default: shop)" in out
    assert "where the emulators' venv, logs and pid files live" in out
    # argparse's wrapping may also break a path at a hyphen ("/tmp/ci-" "clone/.stack"): compare without spaces.
    assert f"(default:{DEFAULT_STATE_DIR})".replace(" ", "") in "".join(out.split())
    assert "(default: 8080, or a free port if it is taken)" in out
    assert "(default: None)" not in out and "(default: )" not in out


def test_a_taken_default_web_port_gives_way_but_an_explicit_one_is_an_error() -> None:
    with contextlib.ExitStack() as hold:
        if port_free(DEFAULT_WEB_PORT):  # else something holds it already, which is the case under test
            sock = hold.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", DEFAULT_WEB_PORT))
            sock.listen()
        port = choose_web_port(None)
        assert port != DEFAULT_WEB_PORT and port_free(port)
        with pytest.raises(StackError, match=f"--web-port {DEFAULT_WEB_PORT}: 127.0.0.1:{DEFAULT_WEB_PORT} is already"):
            choose_web_port(DEFAULT_WEB_PORT)


class _Up:
    """`python -m stack up` as a user runs it; a thread reads its output, so every wait keeps its deadline."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "stack", "up", "--model", "instant", "--customers", "5", *args]
        cmd += ["--state-dir", str(state_dir)]
        env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float = 300) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def exit_code(self, timeout_s: float = 120) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return code

    def quit(self, timeout_s: float = 120) -> int:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("/quit\n")
            self.proc.stdin.flush()
        return self.exit_code(timeout_s)

    def stop(self) -> None:
        """SIGTERM (it stops its pipeline, page and emulators on the way out), SIGKILL only if that hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.timeout(600)
def test_a_second_stack_beside_a_first_gets_its_own_ports_page_and_logs(tmp_path: Path, bq_venv: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "bq-venv").symlink_to(bq_venv)  # the built one: no minute-long venv build in a test
    first_port = free_port()
    first = _Up(state, "--web-port", str(first_port))
    second = taken = None
    try:
        first.wait_for(r"Chatting as customer C0001")
        url1 = first.wait_for(r"chat page on (http://127\.0\.0\.1:\d+/)").group(1)
        assert url1 == f"http://127.0.0.1:{first_port}/"
        logs1 = first.wait_for(r"pipeline running .*; logs in (\S+)$").group(1)
        # Asking for a port that is taken is refused at once, saying so (not hidden in a log).
        taken = _Up(state, "--web-port", str(first_port))
        assert taken.exit_code() == 1
        assert any(f"127.0.0.1:{first_port} is already in use" in line for line in taken.lines), taken.lines
        # A second stack on a free port says a first one runs, and prints its own addresses.
        second = _Up(state, "--web-port", "0")
        other = second.wait_for(r"another stack runs on .*: pid (\d+), chat page (\S+), logs in (\S+)")
        assert (int(other.group(1)), other.group(2), other.group(3)) == (first.proc.pid, url1, logs1)
        second.wait_for(r"Chatting as customer C0001")
        url2 = second.wait_for(r"chat page on (http://127\.0\.0\.1:\d+/)").group(1)
        logs2 = second.wait_for(r"pipeline running .*; logs in (\S+)$").group(1)
        assert url2 != url1 and logs2 != logs1 and Path(logs2) == state / "logs" / str(second.proc.pid)
        hosts = [
            m.group(0)
            for m in (re.search(r"PUBSUB_EMULATOR_HOST=\S+", "\n".join(u.lines)) for u in (first, second))
            if m
        ]
        assert len(set(hosts)) == 2, hosts
        for url in (url1, url2):
            with urllib.request.urlopen(url, timeout=10) as page:
                assert page.status == 200
        for logs in (logs1, logs2):
            assert (Path(logs) / "web.log").is_file() and (Path(logs) / "pubsub.log").is_file()
        groups = [json.loads(f.read_text())["pgid"] for f in (state / "run").glob("*.json") if "pgid" in f.read_text()]
        assert len(groups) == 6  # three emulators per stack, a pid file each
        records = {f.name for f in (state / "run" / "stacks").glob("*.json")}
        assert records == {f"up-{first.proc.pid}.json", f"up-{second.proc.pid}.json"}
        second.proc.terminate()  # `kill <pid>` stops a stack as /quit does: nothing of it is left running
        assert second.exit_code() == 128 + signal.SIGTERM, second.lines
        assert port_free(int(url2.rsplit(":", 1)[1].strip("/"))), "the second stack's page outlived it"
        assert first.quit() == 0, first.lines
        assert all(_group_members(pgid) == [] for pgid in groups), "an emulator outlived its stack"
        assert list((state / "run").rglob("*.json")) == []  # pid files and stack records, all gone
    finally:
        for up in (first, second, taken):
            if up is not None:
                up.stop()
