"""The telco pack's seed data and its SQLite store: accounts, plans, invoices, SIMs and outages.

Nothing here is real. Every value is drawn from ``random.Random(f"{SEED}:{index}")``, so account
``ACC-100042`` is the same whatever the account count and however often it runs; dates are relative
to the fixed ``REFERENCE_DATE`` (the seed's "today"), not the wall clock. Phone numbers use Ofcom's
range for drama (07700 900000-900999) and e-mail addresses the reserved example.* domains.

Each account's newest invoice differs from the one before for a reason its line items state (a
``why`` on the changed line), drawn in turn from ``BILL_CHANGES``: an annual price change, roaming,
a one-off add-on, a loyalty discount that ended, or no change. ``explain_bill_change`` reads only these
line items, so an explanation never says anything the bill does not.

The store is one SQLite file that the MCP server owns (``ensure_database(path)`` creates and seeds
it if missing). Tables::

    accounts     account_id, name, email, plan_name, monthly_price, data_allowance_gb, data_used_gb,
                 extra_data_gb, cycle_end, address, postcode, postcode_area, sim_iccid, sim_msisdn, sim_status
    invoices     invoice_id, account_id, period_start, period_end, issued_on, total, currency, status, items (JSON)
    outages      outage_id, postcode_area, service, status, started_at, eta, summary
    actions      the audit of every data-changing call: action_id (the idempotency key), account_id,
                 session_id, turn_id, tool, args, result (JSON), created_at, replays
    data_packs, sim_orders, tickets, handoffs   what the actions created
"""

from __future__ import annotations

import calendar
import json
import os
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

SEED = 20261120
DEFAULT_ACCOUNTS = 60
REFERENCE_DATE = date(2026, 11, 20)  # the seed's "today": the same day as the shop's seed "now" (Pack.reference_time)
CURRENCY = "GBP"

# (name, monthly price, mobile data allowance in GB)
PLANS: tuple[tuple[str, float, int], ...] = (
    ("Mobile Essentials 5GB", 10.00, 5),
    ("Mobile Everyday 20GB", 16.00, 20),
    ("Mobile Plus 50GB", 22.00, 50),
    ("Fibre 150 + Mobile 30GB", 42.00, 30),
    ("Fibre 500 + Mobile 100GB", 58.00, 100),
)
DATA_PACKS_GB: dict[int, float] = {1: 3.00, 5: 6.00, 10: 10.00, 20: 15.00}  # size -> one-off price
MAX_DATA_PACKS_PER_CYCLE = 3
BILL_CHANGES = ("price_rise", "roaming", "add_on", "discount_ended", "none")
PRICE_RISE = 1.50  # a month, from the newest bill on, for accounts whose change is "price_rise"
LOYALTY_DISCOUNT = 3.00
ROAMING_DAY = 2.25

POSTCODE_AREAS: tuple[tuple[str, str], ...] = (
    ("LS", "Leeds"), ("M", "Manchester"), ("B", "Birmingham"), ("BS", "Bristol"), ("G", "Glasgow"),
    ("CF", "Cardiff"), ("NE", "Newcastle upon Tyne"), ("EH", "Edinburgh"), ("NG", "Nottingham"), ("SO", "Southampton"),
)  # fmt: skip
POSTCODE_UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
STREETS = ("High Street", "Station Road", "Church Lane", "Park Avenue", "Mill Road", "Victoria Street", "Kings Road")
FIRST_NAMES = (
    "Amelia", "Oliver", "Isla", "Noah", "Ava", "Leo", "Mia", "Arthur", "Sofia", "Jack", "Emma", "Lucas",
    "Grace", "Theo", "Freya", "Oscar", "Ivy", "Harry", "Ruby", "Finley",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright",
    "Evans", "Walker", "Khan", "Roberts", "Thompson", "Hughes",
)  # fmt: skip

# Outages by postcode area. Times are ISO strings on REFERENCE_DATE's clock.
OUTAGES: tuple[dict[str, Any], ...] = (
    {"outage_id": "OUT-2026-0141", "postcode_area": "LS", "service": "broadband", "status": "investigating",
     "started_at": "2026-11-20T07:40:00+00:00", "eta": "2026-11-20T18:00:00+00:00",
     "summary": "Fibre broadband is down for some homes in Leeds; engineers are tracing a cable fault."},
    {"outage_id": "OUT-2026-0142", "postcode_area": "M", "service": "mobile", "status": "repairing",
     "started_at": "2026-11-19T22:15:00+00:00", "eta": "2026-11-20T16:00:00+00:00",
     "summary": "A mast in central Manchester is being repaired: 4G and 5G data may be slow or drop."},
    {"outage_id": "OUT-2026-0137", "postcode_area": "BS", "service": "broadband", "status": "resolved",
     "started_at": "2026-11-18T09:00:00+00:00", "eta": "2026-11-18T15:30:00+00:00",
     "summary": "Broadband in parts of Bristol was restored at 15:30 on 18 November."},
    {"outage_id": "OUT-2026-0143", "postcode_area": "G", "service": "broadband", "status": "planned",
     "started_at": "2026-11-24T00:00:00+00:00", "eta": "2026-11-24T05:00:00+00:00",
     "summary": "Planned overnight maintenance in Glasgow: broadband may drop for up to 30 minutes."},
)  # fmt: skip

SCHEMA = """
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, plan_name TEXT NOT NULL,
    monthly_price REAL NOT NULL, data_allowance_gb REAL NOT NULL, data_used_gb REAL NOT NULL,
    extra_data_gb REAL NOT NULL DEFAULT 0, cycle_end TEXT NOT NULL, address TEXT NOT NULL,
    postcode TEXT NOT NULL, postcode_area TEXT NOT NULL, sim_iccid TEXT NOT NULL, sim_msisdn TEXT NOT NULL,
    sim_status TEXT NOT NULL
);
CREATE TABLE invoices (
    invoice_id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(account_id),
    period_start TEXT NOT NULL, period_end TEXT NOT NULL, issued_on TEXT NOT NULL, total REAL NOT NULL,
    currency TEXT NOT NULL, status TEXT NOT NULL, items TEXT NOT NULL
);
CREATE INDEX invoices_by_account ON invoices(account_id, issued_on);
CREATE TABLE outages (
    outage_id TEXT PRIMARY KEY, postcode_area TEXT NOT NULL, service TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT NOT NULL, eta TEXT, summary TEXT NOT NULL
);
CREATE TABLE actions (
    action_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL,
    tool TEXT NOT NULL, args TEXT NOT NULL, result TEXT NOT NULL, created_at TEXT NOT NULL,
    replays INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE data_packs (
    pack_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, size_gb INTEGER NOT NULL, price REAL NOT NULL,
    cycle_end TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE sim_orders (
    order_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, reason TEXT NOT NULL, old_iccid TEXT NOT NULL,
    delivery_by TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE tickets (
    ticket_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, subject TEXT NOT NULL, details TEXT NOT NULL,
    status TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE handoffs (
    handoff_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, reason TEXT NOT NULL, summary TEXT NOT NULL,
    session_id TEXT NOT NULL, turn_id TEXT NOT NULL, created_at TEXT NOT NULL
);
"""


def account_id(index: int) -> str:
    """The id of the ``index``-th account (1-based): ``ACC-100001``, ``ACC-100002``, ..."""
    return f"ACC-{100000 + index}"


def _month_day(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _add_months(d: date, months: int, day: int) -> date:
    total = d.year * 12 + d.month - 1 + months
    return _month_day(total // 12, total % 12 + 1, day)


def cycle_end_after(today: date, cycle_day: int) -> date:
    """The first billing day strictly after ``today`` (a cycle ends on ``cycle_day`` each month)."""
    this_month = _month_day(today.year, today.month, cycle_day)
    return this_month if this_month > today else _add_months(this_month, 1, cycle_day)


@dataclass(frozen=True)
class Seed:
    """Everything the store starts with, as plain rows."""

    accounts: tuple[dict[str, Any], ...]
    invoices: tuple[dict[str, Any], ...]
    outages: tuple[dict[str, Any], ...] = OUTAGES


def _item(code: str, description: str, amount: float, why: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "description": description, "amount": round(amount, 2)}
    if why:
        out["why"] = why
    return out


def _invoice_items(
    plan: str, base_price: float, change: str, back: int, rng: random.Random, period_start: date
) -> list[dict[str, Any]]:
    """The line items of the invoice ``back`` months before the newest; the newest carries the account's change."""
    newest = back == 0
    price = base_price + (PRICE_RISE if change == "price_rise" and newest else 0.0)
    why = ""
    if change == "price_rise" and newest:
        why = f"annual price change of £{PRICE_RISE:.2f} a month from {period_start:%d %B %Y}, as the contract sets out"
    items = [_item("plan", f"{plan} monthly charge", price, why)]
    if change == "discount_ended" and not newest:
        discount = _item("loyalty_discount", "12-month loyalty discount", -LOYALTY_DISCOUNT)
        if back == 1:
            discount["note"] = "the 12-month loyalty discount ended with this bill"
        items.append(discount)
    if change == "roaming" and newest:
        days = rng.randint(3, 8)
        items.append(
            _item("roaming", f"EU roaming: {days} days at £{ROAMING_DAY:.2f} a day", days * ROAMING_DAY,
                  f"phone used abroad on {days} days in this period")
        )  # fmt: skip
    if change == "add_on" and newest:
        size = rng.choice((5, 10))
        items.append(
            _item(f"data_pack_{size}gb", f"Data pack {size} GB (one-off)", DATA_PACKS_GB[size],
                  "a one-off data pack was added during this period")
        )  # fmt: skip
    return items


def build_seed(accounts: int = DEFAULT_ACCOUNTS, seed: int = SEED, today: date = REFERENCE_DATE) -> Seed:
    """The deterministic seed: ``accounts`` accounts (ids ``ACC-100001`` on), each with 3-6 invoices."""
    account_rows: list[dict[str, Any]] = []
    invoice_rows: list[dict[str, Any]] = []
    invoice_no = 0
    for index in range(1, accounts + 1):
        rng = random.Random(f"{seed}:{index}")
        plan, price, allowance = PLANS[rng.randrange(len(PLANS))]
        area, city = POSTCODE_AREAS[(index - 1) % len(POSTCODE_AREAS)]
        unit = "".join(rng.choice(POSTCODE_UNIT_LETTERS) for _ in range(2))
        postcode = f"{area}{rng.randint(1, 19)} {rng.randint(1, 9)}{unit}"
        cycle_day = rng.randint(1, 28)
        cycle_end = cycle_end_after(today, cycle_day)
        used = round(allowance * rng.uniform(0.05, 1.0), 1)
        change = BILL_CHANGES[(index - 1) % len(BILL_CHANGES)]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        aid = account_id(index)
        account_rows.append(
            {
                "account_id": aid,
                "name": f"{first} {last}",
                "email": f"{first}.{last}{index}@example.{rng.choice(('com', 'net', 'org'))}".lower(),
                "plan_name": plan,
                "monthly_price": round(price + (PRICE_RISE if change == "price_rise" else 0.0), 2),
                "data_allowance_gb": float(allowance),
                "data_used_gb": used,
                "extra_data_gb": 0.0,
                "cycle_end": cycle_end.isoformat(),
                "address": f"{rng.randint(1, 180)} {rng.choice(STREETS)}, {city}",
                "postcode": postcode,
                "postcode_area": area,
                "sim_iccid": f"894410{index:05d}{rng.randint(0, 99999999):08d}",
                "sim_msisdn": f"07700 900{index % 1000:03d}",
                "sim_status": "active",
            }
        )
        count = rng.randint(3, 6)
        # The newest invoice is for the cycle that ended on the last billing day on or before today.
        last_end = _add_months(cycle_end, -1, cycle_day)
        for back in range(count - 1, -1, -1):
            end = _add_months(last_end, -back, cycle_day)
            start = _add_months(end, -1, cycle_day)
            invoice_no += 1
            items = _invoice_items(plan, price, change, back, rng, start)
            invoice_rows.append(
                {
                    "invoice_id": f"INV-{end.year}-{invoice_no:06d}",
                    "account_id": aid,
                    "period_start": start.isoformat(),
                    "period_end": (end - timedelta(days=1)).isoformat(),
                    "issued_on": end.isoformat(),
                    "total": round(sum(i["amount"] for i in items), 2),
                    "currency": CURRENCY,
                    "status": "due" if back == 0 else "paid",
                    "items": items,
                }
            )
    return Seed(tuple(account_rows), tuple(invoice_rows))


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the store, with rows as ``sqlite3.Row`` and a busy timeout for concurrent writers."""
    conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)  # transactions are explicit (BEGIN)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error): reads and writes of one action commit together."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def write_seed(conn: sqlite3.Connection, seed: Seed) -> None:
    """Create the tables and insert ``seed`` (one transaction)."""
    conn.executescript(SCHEMA)
    with transaction(conn):
        for row in seed.accounts:
            conn.execute(
                f"INSERT INTO accounts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )
        for row in seed.invoices:
            values = {**row, "items": json.dumps(row["items"], separators=(",", ":"))}
            conn.execute(
                f"INSERT INTO invoices ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
        for row in seed.outages:
            conn.execute(
                f"INSERT INTO outages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )


def ensure_database(path: str | Path, accounts: int = DEFAULT_ACCOUNTS) -> Path:
    """The store at ``path``: created and seeded if the file does not exist yet, left as it is otherwise.

    Seeds into a temporary file that is renamed into place, so a crash halfway leaves no half-seeded store.
    """
    target = Path(path)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.seeding")
    tmp.unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        write_seed(conn, build_seed(accounts))
    finally:
        conn.close()
    if target.exists():  # another process seeded it meanwhile: the same data, keep theirs
        tmp.unlink()
    else:
        tmp.replace(target)
    return target
