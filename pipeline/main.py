"""Run the streaming service: ``python -m pipeline.main [Beam options] [supportflow options]``.

Locally (emulators): ``--streaming --runner=BundleBasedDirectRunner`` with the
``*_EMULATOR_HOST`` variables set and ``--bigquery_endpoint``. On Dataflow the
same graph runs with ``--runner=DataflowRunner --project ... --region ...``
(docs/operations.md, "Deploying on Dataflow"); the Flex Template's launcher runs this module too.

Order of a launch: options (command line, then ``SUPPORTFLOW_*`` variables for
options not given) -> ``Settings`` (every check, all problems reported at once,
exit code 2) -> settings written back into the options -> graph -> inference
step's resource hints -> run. Nothing here patches Beam: the local stack runs
``python -m pipeline.local_runner``, which is this ``main`` with the local runner's
patches applied between building and running (``pipeline/local_runner.py``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.graph import build
from pipeline.options import argv_with_env
from pipeline.resource_hints import pin_inference_resources
from pipeline.settings import Settings, SettingsError

logger = logging.getLogger(__name__)


def _options_and_env(argv: Sequence[str], environ: Mapping[str, str] | None) -> tuple[PipelineOptions, list[str]]:
    argv, from_env = argv_with_env(argv, os.environ if environ is None else environ)
    options = PipelineOptions(argv)
    std = options.view_as(StandardOptions)
    std.streaming = True  # this service only makes sense as a stream
    if not std.runner:
        # The default DirectRunner tries to download Prism first; name the local streaming runner.
        std.runner = "BundleBasedDirectRunner"
    return options, from_env


def build_pipeline(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[beam.Pipeline, Settings]:
    """Options -> validated settings -> the graph, ready to run. Raises ``SettingsError``."""
    environ = os.environ if environ is None else environ
    options, from_env = _options_and_env(argv, environ)
    settings = Settings.from_options(options, environ=environ, from_env=from_env)
    settings.apply_to(options)
    p = beam.Pipeline(options=options)
    build(p, settings)
    pin_inference_resources(p, settings)
    return p, settings


def main(argv: list[str] | None = None, prepare: Callable[[Settings], object] | None = None) -> None:
    """Build and run. ``prepare(settings)`` runs between the two: ``python -m pipeline.local_runner`` patches
    Beam's local runner there; this module never does."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        p, settings = build_pipeline(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    logger.info(settings.describe())
    for warning in settings.warnings:
        logger.warning(warning)
    if prepare is not None:
        prepare(settings)
    elif not settings.on_dataflow:
        logger.warning(
            "Beam's local runner unpatched: idle Pub/Sub pulls stall it 30 s and a kill loses what is in flight; "
            "`python -m pipeline.local_runner` runs it as the local stack does"
        )
    result = p.run()
    if settings.on_dataflow:
        # A streaming job never finishes: the launcher (and a Flex Template's launcher VM) returns once it is
        # submitted. Watch it in the console or with `gcloud dataflow jobs describe`.
        job = getattr(result, "job_id", None)
        logger.info("submitted Dataflow job %s", job() if callable(job) else "(dry run)")
        return
    result.wait_until_finish()


if __name__ == "__main__":
    main()
