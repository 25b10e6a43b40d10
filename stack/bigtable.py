"""The customer-context table in the Bigtable emulator: create it and seed it with the Firestore seed data.

Same customers as the pack's seed (``Pack.build_customers``: the same (seed, index) gives the same customer),
one row per customer, laid out as ``contract.context_layout`` says: a family per collection the pack
declares (``Pack.context``), one column per record::

    row key <customer id>
      profile:name        "Amelia Smith"          one column per profile field, JSON
      profile:address     {"line1": ..., ...}
      tickets:<ticket id> {"subject": ..., "status": ..., "created_at": ...}
      ...                                          (every declared collection alike)

Help articles stay in Firestore only: they are not per-customer context.

The Bigtable emulator needs no instance: any instance id works and tables are created through the admin
API. Clients find it through ``BIGTABLE_EMULATOR_HOST`` (``LocalStack(bigtable=True).apply_env()``).

    python -m stack.bigtable --customers 300     # needs BIGTABLE_EMULATOR_HOST
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.cloud import bigtable
from google.cloud.bigtable import column_family

from contract.context_layout import (
    DEFAULT_BIGTABLE_INSTANCE,
    DEFAULT_BIGTABLE_TABLE,
    PROFILE_FAMILY,
    encode_cell,
    table_families,
)
from stack.emulators import DEFAULT_PROJECT, StackError
from tools.context_collection import ContextCollection
from tools.packs import DEFAULT_PACK, load_pack

ADMIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BigtableSeedStats:
    rows: int
    cells: int
    seconds: float


def admin_client(project: str) -> bigtable.Client:
    """An admin client on $BIGTABLE_EMULATOR_HOST; refuses to run without it (never touch a real project)."""
    if not os.environ.get("BIGTABLE_EMULATOR_HOST", "").strip():
        raise StackError("BIGTABLE_EMULATOR_HOST is not set: start LocalStack(bigtable=True) and apply its env")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator")
        return bigtable.Client(project=project, admin=True)


def _default_collections() -> tuple[ContextCollection, ...]:
    return load_pack(DEFAULT_PACK).context  # the seed data below is the default pack's


def ensure_table(
    client: bigtable.Client,
    instance: str = DEFAULT_BIGTABLE_INSTANCE,
    table: str = DEFAULT_BIGTABLE_TABLE,
    collections: Sequence[ContextCollection] | None = None,
) -> bigtable.table.Table:
    """The customer-context table with its column families (one version kept), created if missing."""
    t = client.instance(instance).table(table)
    if not t.exists():
        names = (c.name for c in (_default_collections() if collections is None else collections))
        t.create(column_families={f: column_family.MaxVersionsGCRule(1) for f in table_families(names)})
    return t


def customer_cells(c: Any, collections: Sequence[ContextCollection] | None = None) -> dict[str, dict[str, bytes]]:
    """family -> column -> JSON cell of one customer's row.

    The seed keeps each collection's documents (id -> document) under the collection's name."""
    cells = {PROFILE_FAMILY: {k: encode_cell(v) for k, v in c.profile.items()}}
    for collection in _default_collections() if collections is None else collections:
        docs = getattr(c, collection.name, None) or {}
        cells[collection.name] = {doc_id: encode_cell(doc) for doc_id, doc in docs.items()}
    return cells


def write_rows(table: bigtable.table.Table, rows: Iterable[tuple[str, dict[str, dict[str, bytes]]]]) -> int:
    """Write (row key, cells) pairs; returns the number of cells. Raises StackError on a failed mutation."""
    cells = 0
    batch: list[bigtable.row.DirectRow] = []

    def flush() -> None:
        statuses = table.mutate_rows(batch)
        failed = [s for s in statuses if s.code != 0]
        if failed:
            raise StackError(f"Bigtable seed: {len(failed)} rows failed, first: {failed[0]}")
        batch.clear()

    for key, families in rows:
        row = table.direct_row(key.encode())
        for family, columns in families.items():
            for column, value in columns.items():
                row.set_cell(family, column.encode(), value)
                cells += 1
        batch.append(row)
        if len(batch) >= 200:
            flush()
    if batch:
        flush()
    return cells


def seed_bigtable(
    client: bigtable.Client,
    customers: int | None = None,
    seed: int | None = None,
    *,
    instance: str = DEFAULT_BIGTABLE_INSTANCE,
    table: str = DEFAULT_BIGTABLE_TABLE,
) -> BigtableSeedStats:
    """One row per seed customer (idempotent: a rerun writes identical latest cells)."""
    t0 = time.monotonic()
    tbl = ensure_table(client, instance, table)
    pack = load_pack()  # the seed's customers as the pack builds them (None: its own count and rng seed)
    if pack.build_customers is None:
        raise StackError(f"pack {pack.name!r} declares no build_customers: nothing to write to Bigtable")
    people = list(pack.build_customers(customers or pack.default_customers, *(() if seed is None else (seed,))))
    cells = write_rows(tbl, ((c.customer_id, customer_cells(c)) for c in people))
    return BigtableSeedStats(rows=len(people), cells=cells, seconds=time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.bigtable", description="Seed the Bigtable emulator.")
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", DEFAULT_PROJECT))
    parser.add_argument("--instance", default=DEFAULT_BIGTABLE_INSTANCE)
    parser.add_argument("--table", default=DEFAULT_BIGTABLE_TABLE)
    args = parser.parse_args(argv)
    try:
        client = admin_client(args.project)
    except StackError as e:
        print(e, file=sys.stderr)
        return 2
    stats = seed_bigtable(client, args.customers, args.seed, instance=args.instance, table=args.table)
    print(
        f"seeded {stats.rows} customer rows ({stats.cells} cells) into {args.project}/{args.instance}/{args.table} "
        f"at {os.environ['BIGTABLE_EMULATOR_HOST']} in {stats.seconds:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
