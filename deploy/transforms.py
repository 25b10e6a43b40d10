"""The Dataflow job graph, built offline, and the snapshot that guards in-place updates.

``dry_run_job(argv)`` builds the real job request for Dataflow without
submitting it (``--dry_run=True``: no GCP access, no credentials; the names
must still look valid, e.g. ``--project=my-project`` and a ``gs://`` bucket
of at least 3 characters, or Beam goes looking for a default bucket online).

``snapshot(proto)`` is what an in-place update (``--update``) matches state
by: the top-level transform names, and every stateful transform's full name
with its state and timer ids. ``deploy/transform_names.json`` holds the
snapshot of the current graph; a test compares the live graph with it, so a
rename cannot reach production by accident: either keep the name, or write
the new snapshot *and* pass ``--transform_name_mapping`` on the next update
(docs/operations.md, "Update and drain").

    python -m deploy.transforms --check   # exit 1 if the graph no longer matches the snapshot
    python -m deploy.transforms --write   # accept the current graph (then plan the mapping!)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from deploy.generated import generated_file_main

SNAPSHOT_PATH = Path(__file__).resolve().parent / "transform_names.json"

# Offline stand-ins: any syntactically valid project / bucket / image works for a dry run.
DRY_RUN_ARGS: tuple[str, ...] = (
    "--runner=DataflowRunner",
    "--project=supportflow-dry-run",
    "--region=us-central1",
    "--temp_location=gs://supportflow-dry-run/tmp",
    "--staging_location=gs://supportflow-dry-run/staging",
    "--sdk_container_image=us-central1-docker.pkg.dev/supportflow-dry-run/supportflow/worker:dry-run",
    "--sdk_location=container",
    "--max_num_workers=3",
    "--streaming",
    "--dry_run=True",
    # The production backend (deploy/deploy.sh's default): its agent loop has the most steps.
    "--model_backend=gemini",
)


def dry_run_job(argv: Sequence[str] = DRY_RUN_ARGS, environ: dict[str, str] | None = None) -> Any:
    """Build and "run" the pipeline on DataflowRunner with ``--dry_run``: returns (job, settings).

    ``job`` is ``apache_beam.runners.dataflow.internal.apiclient.Job``: ``job.proto`` is the Dataflow job
    request, ``job.proto_pipeline`` the portable pipeline (transforms, environments, resource hints),
    ``job.options`` the final options (after the runner added its streaming experiments).
    """
    from pipeline.main import build_pipeline

    p, settings = build_pipeline(list(argv), environ={} if environ is None else environ)
    result = p.run()
    return result.job, settings


def job_environment(job: Any) -> Any:
    """The Dataflow ``Environment`` (experiments, service options, worker pool) the runner would send,
    built offline the way ``DataflowApplicationClient.create_job_description`` builds it."""
    from apache_beam.runners.dataflow.internal import apiclient

    return apiclient.Environment(
        packages=[],
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url="gs://supportflow-dry-run/staging/pipeline.pb",
        proto_pipeline=job.proto_pipeline,
    ).proto


def _state_and_timers(transform: beam_runner_api_pb2.PTransform) -> dict[str, list[str]] | None:
    if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
        return None
    payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
    if not (payload.state_specs or payload.timer_family_specs):
        return None
    return {"state": sorted(payload.state_specs), "timers": sorted(payload.timer_family_specs)}


def snapshot(proto: beam_runner_api_pb2.Pipeline) -> dict[str, Any]:
    """Top-level transform names and the stateful transforms (full name -> state and timer ids)."""
    transforms = proto.components.transforms
    roots = [transforms[t] for t in proto.root_transform_ids]
    top = sorted({transforms[s].unique_name for r in roots for s in r.subtransforms} or {r.unique_name for r in roots})
    stateful = {}
    for t in transforms.values():
        spec = _state_and_timers(t)
        if spec is not None:
            stateful[t.unique_name] = spec
    return {"top_level": top, "stateful": dict(sorted(stateful.items()))}


def resource_hints_by_transform(proto: beam_runner_api_pb2.Pipeline) -> dict[str, dict[str, bytes]]:
    """Leaf transform name -> the resource hints of the environment it runs in (only non-empty ones)."""
    envs = proto.components.environments
    out = {}
    for t in proto.components.transforms.values():
        if t.subtransforms or not t.environment_id:
            continue
        hints = dict(envs[t.environment_id].resource_hints)
        if hints:
            out[t.unique_name] = hints
    return out


def _current_snapshot(_current: str) -> str:
    logging.basicConfig(level=logging.ERROR)
    job, _ = dry_run_job()
    return json.dumps(snapshot(job.proto_pipeline), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated_file_main(
        argv,
        description=__doc__,
        path=SNAPSHOT_PATH,
        render=_current_snapshot,
        check_help="exit 1 if the graph differs from the snapshot",
        print_help="print the current snapshot",
        stale=(
            f"the graph's transform names differ from {SNAPSHOT_PATH}: a running job cannot be updated in place "
            "without --transform_name_mapping. Keep the names, or run `python -m deploy.transforms --write` "
            "and plan the mapping (docs/operations.md: Update and drain)."
        ),
        fresh=f"{SNAPSHOT_PATH} matches the graph",
    )


if __name__ == "__main__":
    raise SystemExit(main())
