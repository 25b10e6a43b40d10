"""The session binding key from Secret Manager (pipeline/secrets.py), against a local server speaking its REST
API (tests/secret_manager_server.py) with the official client: read by the workers at setup (a real Beam
pipeline), by the frontend from its environment, rotated with old and new keys accepted together, and kept
out of a Dataflow job's options (pipeline/settings.py; the job itself: tests/test_deploy_secrets.py)."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from contract.binding import BindingRefused, mint_session_id, verify_session_binding
from contract.dead_letters import DEAD_LETTER_TAG
from contract.messages import InboundMessage
from pipeline.ownership import CheckSessionOwner
from pipeline.secrets import ENDPOINT_ENV, REFRESH_S, SECRET_ENV, BindingKeys, SecretReader, SecretUnavailable
from pipeline.settings import Settings
from pipeline.validation import SettingsError
from stack.emulators import LocalStack
from tests.secret_manager_server import SecretManagerServer, running

PROJECT = "supportflow-test"
OLD, NEW = "old-binding-key-" + "o" * 20, "new-binding-key-" + "n" * 20


def secret_name(secret: str, version: str = "latest") -> str:
    return f"projects/{PROJECT}/secrets/{secret}/versions/{version}"


@pytest.fixture
def server() -> Iterator[SecretManagerServer]:
    with running() as s:
        yield s


class Clock:
    """The readers' monotonic clock, moved by the test (rotation spans minutes)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rotation_accepts_old_and_new_keys_together_and_signs_with_the_new_one_once_every_reader_has_it(
    server: SecretManagerServer,
) -> None:
    server.add_version("binding", OLD)
    clock = Clock()
    frontend = BindingKeys(secret=secret_name("binding"), reader=SecretReader(server.url), clock=clock)
    worker = BindingKeys(secret=secret_name("binding"), reader=SecretReader(server.url), clock=clock)
    assert frontend.accepted() == (OLD.encode(),) and frontend.signing_key() == OLD.encode()
    old_session = mint_session_id([frontend.signing_key()], "C0001")

    clock.now += 60
    server.add_version("binding", NEW)  # the rotation: one `gcloud secrets versions add`
    clock.now += REFRESH_S - 60  # both readers re-read now
    assert frontend.accepted() == (NEW.encode(), OLD.encode()) == worker.accepted()
    assert frontend.signing_key() == OLD.encode()  # a worker may not have the new key yet
    clock.now += REFRESH_S
    assert frontend.signing_key() == NEW.encode()  # every worker re-read since it appeared
    new_session = mint_session_id([frontend.signing_key()], "C0001")
    for session in (old_session, new_session):  # the window: both verify at the worker
        verify_session_binding(worker.accepted(), session, "C0001")

    server.disable("binding", 1)  # after the session lifetime: the old key's version is disabled
    clock.now += REFRESH_S
    assert worker.accepted() == (NEW.encode(),)
    verify_session_binding(worker.accepted(), new_session, "C0001")
    with pytest.raises(BindingRefused, match="forged"):
        verify_session_binding(worker.accepted(), old_session, "C0001")


def test_a_pinned_version_is_read_alone_and_may_list_keys(server: SecretManagerServer) -> None:
    server.add_version("binding", f"{NEW},{OLD}\n")  # gcloud --data-file keeps the newline
    server.add_version("binding", "x" * 32)
    keys = BindingKeys(secret=secret_name("binding", "1"), reader=SecretReader(server.url))
    assert keys.accepted() == (NEW.encode(), OLD.encode()) and keys.signing_key() == NEW.encode()
    assert server.requests == [f"/v1/{secret_name('binding', '1')}:access"]


def test_a_missing_secret_fails_at_setup_and_a_failed_reread_keeps_the_last_keys() -> None:
    with running() as server:
        with pytest.raises(SecretUnavailable, match="NotFound"):
            BindingKeys(secret=secret_name("nowhere"), reader=SecretReader(server.url))
        server.add_version("binding", OLD)
        clock = Clock()
        keys = BindingKeys(secret=secret_name("binding"), reader=SecretReader(server.url, timeout_s=1), clock=clock)
    clock.now += REFRESH_S  # the server is gone: the re-read fails
    assert keys.accepted() == (OLD.encode(),)
    with pytest.raises(SecretUnavailable, match="too short"), running() as short:
        short.add_version("binding", "short")
        BindingKeys(secret=secret_name("binding"), reader=SecretReader(short.url))


def test_the_frontend_takes_the_secret_from_the_same_variable_as_the_pipeline(server: SecretManagerServer) -> None:
    server.add_version("binding", NEW)
    keys = BindingKeys.from_env({SECRET_ENV: secret_name("binding"), ENDPOINT_ENV: server.url})
    assert keys is not None and keys.accepted() == (NEW.encode(),)
    assert SECRET_ENV == "SUPPORTFLOW_SESSION_BINDING_SECRET"
    with pytest.raises(ValueError, match="not both"):
        BindingKeys.from_env({SECRET_ENV: secret_name("binding"), "SUPPORTFLOW_SESSION_BINDING_KEY": OLD})
    assert BindingKeys.from_env({}) is None


def message(session: str, customer: str, message_id: str) -> InboundMessage:
    return InboundMessage(session_id=session, customer_id=customer, message_id=message_id,
                          text="where is my order?", sent_at=datetime.now(UTC))  # fmt: skip


@pytest.mark.e2e
def test_workers_read_the_key_from_secret_manager_at_setup(
    local_stack: LocalStack, server: SecretManagerServer
) -> None:
    server.add_version("binding", NEW)
    stage = CheckSessionOwner(
        local_stack.project, f"owners_{uuid.uuid4().hex[:8]}", binding_secret=secret_name("binding"),
        secret_endpoint=server.url,
    )  # fmt: skip
    assert NEW.encode() not in pickle.dumps(stage)  # what travels with the job: the secret's name only
    session = mint_session_id([NEW.encode()], "C0001")
    msgs = [message(session, "C0001", "m-owner"), message(session, "C0002", "m-other")]
    with test_pipeline.TestPipeline(runner="BundleBasedDirectRunner") as p:
        out = p | beam.Create(msgs) | beam.ParDo(stage).with_outputs(DEAD_LETTER_TAG, main="messages")
        assert_that(out.messages | beam.Map(lambda m: m.message_id), equal_to(["m-owner"]), label="passed")
        reasons = out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.message_ids[0], d.reason.split(" (")[0]))
        expected = [("m-other", "session binding does not verify for this customer")]
        assert_that(reasons, equal_to(expected), label="refused")
    assert f"/v1/{secret_name('binding')}:access" in server.requests  # read by the worker, not given to it


# -- settings: the key's name may travel with a job, the key may not ---------------------------------------

DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
    "--max_num_workers=5",
    "--sdk_container_image=us-docker.pkg.dev/my-project/supportflow/worker:1",
]


def test_on_dataflow_the_key_itself_is_refused_and_its_secret_accepted() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.local(*DATAFLOW, f"--session_binding_key={OLD}")
    assert err.value.problems == [
        "--session_binding_key is set on Dataflow, where the job's options are readable by anyone who can view "
        "the job: put the key in Secret Manager and give --session_binding_secret "
        "(projects/P/secrets/S/versions/latest) instead"
    ]
    assert OLD not in str(err.value)
    s = Settings.local(*DATAFLOW, f"--session_binding_secret={secret_name('binding')}")
    assert s.session_binding_secret == secret_name("binding") and s.session_binding_key is None
    assert Settings.local(f"--session_binding_key={OLD}").session_binding_key == OLD  # the local stack's way


def test_a_malformed_secret_name_or_both_ways_at_once_are_refused_without_echoing_the_value() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.local(f"--session_binding_secret={OLD}")  # a key pasted into the wrong option
    assert "not a secret version name" in str(err.value) and OLD not in str(err.value)
    with pytest.raises(SettingsError, match="both set"):
        Settings.local(f"--session_binding_secret={secret_name('binding')}", f"--session_binding_key={OLD}")
    with pytest.raises(SettingsError, match="local server"):
        Settings.local(
            *DATAFLOW, f"--session_binding_secret={secret_name('b')}", "--secret_manager_endpoint=http://127.0.0.1:1"
        )
