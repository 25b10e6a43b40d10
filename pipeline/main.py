"""Run the streaming service: ``python -m pipeline.main [Beam options] [supportflow options]``.

Locally (emulators): ``--streaming --runner=BundleBasedDirectRunner`` with the
``*_EMULATOR_HOST`` variables set and ``--bigquery_endpoint``. On Dataflow the
same graph runs with ``--runner=DataflowRunner --project ... --region ...``.
"""

from __future__ import annotations

import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.graph import build


def make_options(argv: list[str]) -> PipelineOptions:
    options = PipelineOptions(argv)
    std = options.view_as(StandardOptions)
    std.streaming = True  # this service only makes sense as a stream
    if not std.runner:
        # The default DirectRunner tries to download Prism first; name the local streaming runner.
        std.runner = "BundleBasedDirectRunner"
    return options


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = make_options(sys.argv[1:] if argv is None else argv)
    p = beam.Pipeline(options=options)
    build(p, options)
    result = p.run()
    result.wait_until_finish()


if __name__ == "__main__":
    main()
