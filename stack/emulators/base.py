"""What every part of the local stack shares: where it lives, the emulators' names and binaries, its error."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
DEFAULT_PROJECT = "supportflow-local"  # same value as pipeline.options.DEFAULT_PROJECT, without importing Beam
HOST = "127.0.0.1"

# The emulator jars come with the machine image (google-cloud-cli); no registry here can reinstall them.
GCLOUD_PLATFORM_DIR = Path("/usr/lib/google-cloud-sdk/platform")
PUBSUB_EMULATOR_BIN = GCLOUD_PLATFORM_DIR / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
FIRESTORE_EMULATOR_BIN = GCLOUD_PLATFORM_DIR / "cloud-firestore-emulator" / "cloud_firestore_emulator"
# A Go binary (no JVM): starts in well under a second. Only started with LocalStack(bigtable=True).
BIGTABLE_EMULATOR_BIN = GCLOUD_PLATFORM_DIR / "bigtable-emulator" / "cbtemulator"

PUBSUB, FIRESTORE, BIGQUERY, BIGTABLE = "pubsub", "firestore", "bigquery", "bigtable"
EMULATOR_NAMES = (PUBSUB, FIRESTORE, BIGQUERY)  # always started; BIGTABLE on request


class StackError(RuntimeError):
    """The local stack cannot start or misbehaved; the message says what is missing or wrong."""
