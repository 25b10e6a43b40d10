"""The local stack: Google's Pub/Sub and Firestore emulators plus bqemulator, on 127.0.0.1
(and Google's Bigtable emulator with ``LocalStack(bigtable=True)``; seeding: ``stack.bigtable``).

Real emulators, no fakes, one module each (``pubsub``, ``firestore``, ``bigquery``, ``bigtable``);
``processes`` launches, probes, stops and reaps them; ``prereqs`` checks the machine
(``python3 -m stack.emulators``); ``local_stack`` starts them together. Each emulator runs in its own
process group on a free port, logging to ``<log_dir>/<name>.log``.

Layout of ``state_dir`` (default: ``<repo>/.stack``)::

    bq-venv/    bqemulator's own virtual environment (its DuckDB pins never meet Beam's)
    bq-home/    HOME of the bqemulator process: DuckDB's extension dir lives under it
    logs/       one log per emulator, rewritten at each start (a second stack beside it: logs/<pid>/)
    run/        pid files of running emulators and stacks
"""

from stack.emulators.base import (
    BIGQUERY,
    BIGTABLE,
    BIGTABLE_EMULATOR_BIN,
    DEFAULT_PROJECT,
    DEFAULT_STATE_DIR,
    EMULATOR_NAMES,
    FIRESTORE,
    FIRESTORE_EMULATOR_BIN,
    GCLOUD_PLATFORM_DIR,
    HOST,
    PUBSUB,
    PUBSUB_EMULATOR_BIN,
    REPO_ROOT,
    StackError,
)
from stack.emulators.bigquery import (
    BQ_VENV_REQUIREMENTS,
    bigquery_emulator,
    bq_venv_python,
    bqemulator_bin,
    ensure_bq_venv,
    find_spatial_extension,
    install_spatial_extension,
)
from stack.emulators.bigtable import bigtable_emulator
from stack.emulators.firestore import firestore_emulator
from stack.emulators.local_stack import LocalStack
from stack.emulators.prereqs import MIN_JAVA_MAJOR, check_machine, check_prerequisites
from stack.emulators.processes import Emulator, _group_members, free_port, port_free, reap_stale
from stack.emulators.pubsub import pubsub_emulator

__all__ = [
    "BIGQUERY",
    "BIGTABLE",
    "BIGTABLE_EMULATOR_BIN",
    "BQ_VENV_REQUIREMENTS",
    "DEFAULT_PROJECT",
    "DEFAULT_STATE_DIR",
    "EMULATOR_NAMES",
    "FIRESTORE",
    "FIRESTORE_EMULATOR_BIN",
    "GCLOUD_PLATFORM_DIR",
    "HOST",
    "MIN_JAVA_MAJOR",
    "PUBSUB",
    "PUBSUB_EMULATOR_BIN",
    "REPO_ROOT",
    "Emulator",
    "LocalStack",
    "StackError",
    "_group_members",
    "bigquery_emulator",
    "bigtable_emulator",
    "bq_venv_python",
    "bqemulator_bin",
    "check_machine",
    "check_prerequisites",
    "ensure_bq_venv",
    "find_spatial_extension",
    "firestore_emulator",
    "free_port",
    "install_spatial_extension",
    "port_free",
    "pubsub_emulator",
    "reap_stale",
]
