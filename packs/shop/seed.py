"""The shop's deterministic synthetic seed data for the Firestore emulator (``PACK.seed``).

Nothing here is real: names come from short lists, emails use the reserved
example.com/.net/.org domains, UK and US phone numbers use the ranges set aside
for fiction, and every value is drawn from ``random.Random(f"{seed}:{index}")``,
so customer C0042 is the same whatever ``--customers`` is and however often it runs.

Layout (read by ``tools/store.py``; the tools' collections: ``packs/shop/records.py``)::

    customers/{C0001}                      name, email, phone, plan, tier, created_at, address{}, locale
    customers/{C0001}/orders/{O-C0001-01}  status, items[], total, currency, placed_at, delivered_at,
                                           shipping{carrier, tracking_id, eta, address}, refundable
    customers/{C0001}/tickets/{T-C0001-01} subject, status, created_at, order_id
    help_articles/{slug}                   title, body, tags, updated_at

Times are relative to the fixed ``REFERENCE_TIME`` (the seed's "now"), not the
wall clock. The most recent order of C0001..C0006 has, in turn, each status in
``ORDER_STATUSES`` (placed, shipped, delayed, delivered, returned, refunded), so
demos and evals can rely on one known customer per situation. ``refundable``
is ``packs.shop.eligibility.is_refundable`` under the shipped policy, and the help articles
are rendered from it (``policies.yaml``): the seed states no policy of its own.

    python -m stack seed --customers 300     # needs FIRESTORE_EMULATOR_HOST (any pack: --pack NAME)
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from packs.shop.eligibility import is_refundable as policy_refundable
from packs.shop.policy import ShopPolicy, default_policy
from packs.shop.records import ORDERS, TICKETS
from tools.scope import CUSTOMERS, HELP_ARTICLES

DEFAULT_SEED = 20261125
DEFAULT_CUSTOMERS = 300
REFERENCE_TIME = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

PLANS = ("free", "plus", "pro")
ORDER_STATUSES = ("placed", "shipped", "delayed", "delivered", "returned", "refunded")
TICKET_STATUSES = ("open", "pending", "closed")

FIRST_NAMES = (
    "Amelia", "Oliver", "Isla", "Noah", "Ava", "Leo", "Mia", "Arthur", "Sofia", "Jack", "Emma", "Lucas",
    "Chloe", "Hugo", "Léa", "Louis", "Hannah", "Felix", "Lena", "Jonas", "Grace", "Ethan", "Zoe", "Mason",
    "Priya", "Omar", "Mei", "Kenji", "Aisha", "Mateo", "Nora", "Elias",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Walker", "Wright", "Johnson", "Miller", "Davis", "Garcia", "Martin",
    "Bernard", "Dubois", "Moreau", "Laurent", "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Patel",
    "Khan", "Nguyen", "Chen", "Okafor", "Silva", "Rossi", "Novak", "Murphy", "Kelly",
)  # fmt: skip


@dataclass(frozen=True)
class Country:
    code: str
    locale: str
    currency: str
    cities: tuple[str, ...]
    streets: tuple[str, ...]
    carriers: tuple[str, ...]


COUNTRIES = (
    Country(
        "GB", "en-GB", "GBP", ("London", "Manchester", "Leeds", "Bristol", "Glasgow", "Cardiff", "Edinburgh"),
        ("High Street", "Station Road", "Church Lane", "Mill Road", "Victoria Street", "Park Avenue"),
        ("Royal Mail", "DPD", "Evri"),
    ),
    Country(
        "US", "en-US", "USD", ("Austin", "Denver", "Portland", "Chicago", "Boston", "Seattle", "Raleigh"),
        ("Maple Drive", "Oak Street", "Pine Avenue", "Lake Road", "Main Street", "Cedar Lane"),
        ("UPS", "USPS", "FedEx"),
    ),
    Country(
        "FR", "fr-FR", "EUR", ("Paris", "Lyon", "Marseille", "Toulouse", "Nantes", "Lille", "Bordeaux"),
        ("rue de la République", "avenue Victor Hugo", "rue du Moulin", "boulevard Voltaire", "rue des Écoles"),
        ("La Poste", "Chronopost", "DPD"),
    ),
    Country(
        "DE", "de-DE", "EUR", ("Berlin", "Hamburg", "München", "Köln", "Leipzig", "Dresden", "Bremen"),
        ("Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Lindenallee", "Bergstraße"),
        ("DHL", "Hermes", "DPD"),
    ),
)  # fmt: skip
COUNTRY_WEIGHTS = (40, 30, 15, 15)

# sku, name, price in USD; other currencies are derived in _price.
CATALOG = (
    ("SKU-1001", "Trail running shoes", 119.00), ("SKU-1002", "Merino wool socks (3 pack)", 24.00),
    ("SKU-1003", "Waterproof shell jacket", 189.00), ("SKU-1004", "Insulated water bottle 750 ml", 32.00),
    ("SKU-1005", "Daypack 22 L", 79.00), ("SKU-1006", "Headlamp 400 lm", 45.00),
    ("SKU-1007", "Fleece pullover", 69.00), ("SKU-1008", "Running shorts", 39.00),
    ("SKU-1009", "Wireless earbuds", 129.00), ("SKU-1010", "Fitness tracker", 149.00),
    ("SKU-1011", "Yoga mat", 49.00), ("SKU-1012", "Foam roller", 29.00),
    ("SKU-1013", "Camping stove", 89.00), ("SKU-1014", "Two-person tent", 299.00),
    ("SKU-1015", "Sleeping bag -5 °C", 219.00), ("SKU-1016", "Trekking poles (pair)", 99.00),
    ("SKU-1017", "Sunglasses, polarised", 85.00), ("SKU-1018", "Cycling gloves", 35.00),
    ("SKU-1019", "Bike light set", 55.00), ("SKU-1020", "Hydration vest", 110.00),
    ("SKU-1021", "Gift card", 50.00), ("SKU-1022", "Compression sleeves", 27.00),
)  # fmt: skip
FX = {"USD": 1.0, "GBP": 0.8, "EUR": 0.92}

TICKET_SUBJECTS = (
    "Where is my order {order_id}?",
    "Return request for order {order_id}",
    "Refund not received for {order_id}",
    "Wrong size delivered in {order_id}",
    "Change delivery address for {order_id}",
    "Item missing from {order_id}",
    "Cannot log in to my account",
    "Question about my {plan} plan",
    "Update my email address",
)


def customer_id(index: int) -> str:
    """1-based index -> document id (``C0001``)."""
    return f"C{index:04d}"


def order_id(cust_id: str, n: int) -> str:
    return f"O-{cust_id}-{n:02d}"


def ticket_id(cust_id: str, n: int) -> str:
    return f"T-{cust_id}-{n:02d}"


@dataclass
class SeedCustomer:
    customer_id: str
    profile: dict[str, Any]
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedStats:
    customers: int
    orders: int
    tickets: int
    articles: int
    seconds: float


def _price(usd: float, currency: str) -> float:
    # Shop-style prices: converted, rounded up to a whole unit, minus a cent.
    return round(max(1.0, round(usd * FX[currency])) - 0.01, 2)


def _postcode(rng: random.Random, country: str) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    if country == "GB":
        area = rng.choice(("M", "LS", "BS", "G", "CF", "EH", "N", "SE", "SW", "E"))
        return f"{area}{rng.randint(1, 20)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
    return f"{rng.randint(10000, 99999)}"


def _phone(rng: random.Random, country: str) -> str:
    if country == "GB":
        return f"+44 7700 900{rng.randint(0, 999):03d}"  # Ofcom's range for drama
    if country == "US":
        return f"+1 {rng.randint(201, 989)}-555-01{rng.randint(0, 99):02d}"  # 555-0100..0199: fictional
    if country == "FR":
        return f"+33 6 39 98 {rng.randint(0, 99):02d} {rng.randint(0, 99):02d}"  # ARCEP's fiction range
    return f"+49 30 {rng.randint(1000000, 9999999)}"


# Carrier-like tracking formats: "#" is a digit, "*" a letter or digit.
_TRACKING_FORMATS = {
    "Royal Mail": "RM#########GB",
    "UPS": "1Z****************",
    "USPS": "9400##################",
    "FedEx": "############",
    "La Poste": "6A###########",
    "Chronopost": "XY#########FR",
    "DHL": "00340###############",
    "Hermes": "H###################",
    "Evri": "H***************",
}


def _tracking_id(rng: random.Random, carrier: str) -> str:
    pools = {"#": "0123456789", "*": "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"}
    return "".join(rng.choice(pools[ch]) if ch in pools else ch for ch in _TRACKING_FORMATS.get(carrier, "#" * 14))


def _tier(lifetime_spend_usd: float, plan: str) -> str:
    score = lifetime_spend_usd + {"free": 0, "plus": 150, "pro": 400}[plan]
    return "gold" if score >= 800 else "silver" if score >= 300 else "bronze"


def _status_for_age(rng: random.Random, age_days: float) -> str:
    if age_days <= 2:
        return rng.choices(("placed", "shipped"), (70, 30))[0]
    if age_days <= 7:
        return rng.choices(("shipped", "delayed", "delivered"), (45, 20, 35))[0]
    if age_days <= 14:
        return rng.choices(("delayed", "delivered", "returned"), (25, 65, 10))[0]
    return rng.choices(("delivered", "returned", "refunded"), (78, 11, 11))[0]


# Ages (days before REFERENCE_TIME) that make each forced status plausible for C0001..C0006.
_FORCED_AGE_DAYS = {
    "placed": 1.0, "shipped": 4.0, "delayed": 13.0, "delivered": 9.0, "returned": 20.0, "refunded": 26.0,
}  # fmt: skip


def _order(
    rng: random.Random, oid: str, status: str, placed_at: datetime, country: Country, address: dict[str, str]
) -> dict[str, Any]:
    currency = country.currency
    items = []
    for sku, name, usd in rng.sample(CATALOG, k=rng.choices((1, 2, 3), (60, 30, 10))[0]):
        qty = rng.choices((1, 2, 3), (85, 12, 3))[0]
        items.append({"sku": sku, "name": name, "qty": qty, "price": _price(usd, currency)})
    total = round(sum(i["qty"] * i["price"] for i in items), 2)
    carrier = rng.choice(country.carriers)
    transit_days = rng.randint(2, 6)
    eta = placed_at + timedelta(days=transit_days, hours=rng.randint(0, 8))
    delivered_at: datetime | None = None
    if status == "delayed":
        # Late: the ETA has passed. Some are late enough for the delay refund, some not yet.
        # Never before the order was placed (a delayed order is at least two days old: placed + 1 day is past).
        eta = max(min(eta, REFERENCE_TIME - timedelta(days=rng.choice((1, 2, 3, 7, 9)))), placed_at + timedelta(days=1))
    elif status in ("shipped", "placed"):
        eta = max(eta, REFERENCE_TIME + timedelta(days=rng.randint(1, 4)))
    elif status in ("delivered", "returned", "refunded"):
        delivered_at = min(eta - timedelta(hours=rng.randint(0, 20)), REFERENCE_TIME - timedelta(hours=6))
        delivered_at = max(delivered_at, placed_at + timedelta(days=1))
    return {
        "status": status,
        "items": items,
        "total": total,
        "currency": currency,
        "placed_at": placed_at,
        "delivered_at": delivered_at,
        "shipping": {
            "carrier": carrier,
            "tracking_id": None if status == "placed" else _tracking_id(rng, carrier),  # not dispatched yet
            "eta": eta,
            "address": dict(address),
        },
        "refundable": is_refundable(status, eta=eta, delivered_at=delivered_at),
    }


def is_refundable(status: str, *, eta: datetime, delivered_at: datetime | None, now: datetime = REFERENCE_TIME) -> bool:
    """The seeded ``refundable`` flag: the shipped policy's refund rules (``packs.shop.eligibility``)."""
    order = {"status": status, "shipping": {"eta": eta}, "delivered_at": delivered_at}
    return policy_refundable(order, now, default_policy())


def build_customer(index: int, seed: int = DEFAULT_SEED) -> SeedCustomer:
    """Customer ``index`` (1-based) with orders and tickets; depends only on (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    cid = customer_id(index)
    country = rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    plan = rng.choices(PLANS, (55, 30, 15))[0]
    created_at = REFERENCE_TIME - timedelta(days=rng.randint(40, 1500), seconds=rng.randint(0, 86399))
    address = {
        "line1": f"{rng.randint(1, 220)} {rng.choice(country.streets)}",
        "city": rng.choice(country.cities),
        "postcode": _postcode(rng, country.code),
        "country": country.code,
    }
    ascii_last = last.translate(str.maketrans({"ü": "ue", "é": "e"})).lower()
    domain = rng.choice(("example.com", "example.net", "example.org"))

    n_orders = rng.choices((1, 2, 3, 4, 5, 6), (15, 25, 25, 15, 12, 8))[0]
    lifetime_days = (REFERENCE_TIME - created_at).days
    ages = sorted((rng.uniform(0.2, lifetime_days) for _ in range(n_orders)), reverse=True)  # oldest first
    # Bias the newest order to the last two weeks: that is what customers ask about.
    ages[-1] = min(ages[-1], rng.uniform(0.2, 14))
    forced = ORDER_STATUSES[index - 1] if index <= len(ORDER_STATUSES) else None
    if forced:
        ages[-1] = _FORCED_AGE_DAYS[forced]
        ages = [max(a, ages[-1] + 1) for a in ages[:-1]] + [ages[-1]]

    customer = SeedCustomer(cid, profile={})
    spend_usd = 0.0
    for n, age in enumerate(ages, start=1):
        status = forced if forced and n == len(ages) else _status_for_age(rng, age)
        placed_at = (REFERENCE_TIME - timedelta(days=age)).replace(microsecond=0)
        order = _order(rng, order_id(cid, n), status, placed_at, country, address)
        customer.orders[order_id(cid, n)] = order
        if status != "refunded":
            spend_usd += order["total"] / FX[country.currency]

    order_ids = list(customer.orders)
    for n in range(1, rng.choices((0, 1, 2, 3), (45, 35, 15, 5))[0] + 1):
        about = rng.choice(order_ids[-3:])
        subject = rng.choice(TICKET_SUBJECTS)
        created = max(customer.orders[about]["placed_at"], REFERENCE_TIME - timedelta(days=60))
        created += timedelta(hours=rng.randint(1, 72))
        created = min(created, REFERENCE_TIME - timedelta(minutes=rng.randint(5, 600)))
        age_days = (REFERENCE_TIME - created).days
        status = "closed" if age_days > 10 else rng.choices(TICKET_STATUSES, (50, 30, 20))[0]
        customer.tickets[ticket_id(cid, n)] = {
            "subject": subject.format(order_id=about, plan=plan),
            "status": status,
            "created_at": created,
            "order_id": about if "{order_id}" in subject else None,
        }

    customer.profile = {
        "name": f"{first} {last}",
        "email": f"{first.lower().replace('é', 'e')}.{ascii_last}{index}@{domain}",
        "phone": _phone(rng, country.code),
        "plan": plan,
        "tier": _tier(spend_usd, plan),
        "created_at": created_at,
        "address": address,
        "locale": country.locale,
    }
    return customer


def build_customers(count: int = DEFAULT_CUSTOMERS, seed: int = DEFAULT_SEED) -> Iterator[SeedCustomer]:
    for index in range(1, count + 1):
        yield build_customer(index, seed)


_UPDATED = datetime(2026, 10, 1, tzinfo=UTC)


def help_articles(policy: ShopPolicy | None = None) -> dict[str, dict[str, Any]]:
    """The help_articles documents: the policy's articles rendered (a projection; the tools render their own)."""
    articles = (policy or default_policy()).articles_rendered()
    return {slug: {**doc, "updated_at": _UPDATED} for slug, doc in articles.items()}


def _writes(client: firestore.Client, customers: list[SeedCustomer]) -> Iterator[tuple[Any, dict[str, Any]]]:
    col = client.collection(CUSTOMERS)
    for c in customers:
        ref = col.document(c.customer_id)
        yield ref, c.profile
        for oid, order in c.orders.items():
            yield ref.collection(ORDERS).document(oid), order
        for tid, ticket in c.tickets.items():
            yield ref.collection(TICKETS).document(tid), ticket
    for slug, article in help_articles().items():
        yield client.collection(HELP_ARTICLES).document(slug), article


def seed_firestore(
    client: firestore.Client,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    *,
    batch_size: int = 400,
    workers: int = 4,
) -> SeedStats:
    """Write the seed set with full-document ``set`` (idempotent: a rerun rewrites identical documents).

    Batched writes committed from a few threads: BulkWriter throttles itself to
    500 ops/s at first (the "500/50/5" ramp), which is pointless against the emulator.
    """
    t0 = time.monotonic()
    people = list(build_customers(customers, seed))
    writes = list(_writes(client, people))
    chunks = [writes[i : i + batch_size] for i in range(0, len(writes), batch_size)]

    def commit(chunk: list[tuple[Any, dict[str, Any]]]) -> None:
        batch = client.batch()
        for ref, data in chunk:
            batch.set(ref, data)
        batch.commit(timeout=60)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(commit, chunks))  # list() re-raises the first failure
    return SeedStats(
        customers=len(people),
        orders=sum(len(c.orders) for c in people),
        tickets=sum(len(c.tickets) for c in people),
        articles=len(default_policy().articles),
        seconds=time.monotonic() - t0,
    )
