"""No secret value in a Dataflow job: the real job request, built offline with ``--dry_run`` (deploy/transforms.py),
carries the session binding key's Secret Manager *name*, and neither its options, its request, its pipeline
(the pickled DoFns) nor the Flex Template metadata hold a key. The workers read the value at setup
(tests/test_secrets.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from apache_beam.internal import pickler
from apache_beam.portability.api import beam_runner_api_pb2

from deploy import template
from deploy.transforms import DRY_RUN_ARGS, dry_run_job, job_environment
from pipeline.main import build_pipeline
from pipeline.ownership import CheckSessionOwner
from pipeline.secrets import SECRET_ENV
from pipeline.validation import SECRET_VERSION_PATTERN, SettingsError

SECRET = "projects/supportflow-dry-run/secrets/supportflow-binding/versions/latest"
KEY = "the-binding-key-itself-" + "k" * 24  # what a launching shell may hold (stack/keys.py puts one there)


@pytest.fixture(scope="module")
def job() -> Any:
    job, _ = dry_run_job(DRY_RUN_ARGS, environ={SECRET_ENV: SECRET})  # as deploy/deploy.sh's shell would give it
    return job


def owner_checks(job: Any) -> list[CheckSessionOwner]:
    """The CheckSessionOwner DoFns as the job ships them to the workers (unpickled from the pipeline proto)."""
    found = []
    for t in job.proto_pipeline.components.transforms.values():
        if t.spec.urn == "beam:transform:pardo:v1":
            fn = pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.payload)[0]
            if isinstance(fn, CheckSessionOwner):
                found.append(fn)
    return found


def test_the_key_in_the_launching_shell_is_refused_on_dataflow() -> None:
    with pytest.raises(SettingsError, match="--session_binding_secret") as err:
        dry_run_job(DRY_RUN_ARGS, environ={"SUPPORTFLOW_SESSION_BINDING_KEY": KEY})
    assert KEY not in str(err.value)


def test_a_dataflow_job_carries_the_secrets_name_and_no_key(job: Any) -> None:
    options = job.options.get_all_options()
    assert options["session_binding_secret"] == SECRET and options["session_binding_key"] is None
    env = job_environment(job)  # the request's environment: the options the workers receive
    request = type(job.proto).to_json(job.proto) + type(env).to_json(env)
    assert SECRET in request  # the workers get the name with the job's options ...
    assert KEY not in request and KEY not in json.dumps(options, default=str)
    (check,) = owner_checks(job)  # ... and so does the DoFn that reads it at setup
    assert (check._secret, check._keys, check._binding) == (SECRET, (), None)
    assert KEY.encode() not in job.proto_pipeline.SerializeToString()


def test_the_search_would_find_a_key_where_one_is_given() -> None:
    """The control: on a local runner the key is an option (the local stack's way), and the checks above see it."""
    p, _ = build_pipeline(["--streaming", "--runner=BundleBasedDirectRunner", "--model_backend=instant"],
                          environ={"SUPPORTFLOW_SESSION_BINDING_KEY": KEY})  # fmt: skip
    assert p.options.get_all_options()["session_binding_key"] == KEY
    proto = p.to_runner_api()
    checks = [
        fn
        for t in proto.components.transforms.values()
        if t.spec.urn == "beam:transform:pardo:v1"
        and isinstance(
            fn := pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.payload)[0],
            CheckSessionOwner,
        )
    ]
    assert [c._keys for c in checks] == [(KEY.encode(),)]


def test_the_template_metadata_names_the_secret_and_holds_no_key() -> None:
    text = template.METADATA_PATH.read_text()
    params = {p["name"]: p for p in json.loads(text)["parameters"]}
    assert params["session_binding_secret"]["regexes"] == [SECRET_VERSION_PATTERN]
    for name in ("session_binding_key", "session_binding_secret", "secret_manager_endpoint"):
        assert "defaultValue" not in params[name]
    assert KEY not in text
