"""The topics, subscriptions, dataset and tables of a real GCP project (``deploy/deploy.sh setup``).

The same names and schemas as the local stack (``stack/resources.py``: TOPICS, SUBSCRIPTIONS, and
``contract/eval_rows.py``), created idempotently with application-default credentials instead of the emulators.

    python -m deploy.resources --project my-project
"""

from __future__ import annotations

import argparse


def ensure_project_resources(project: str) -> dict[str, object]:
    from google.cloud import bigquery, pubsub_v1

    from stack.resources import SUBSCRIPTIONS, TOPICS, ensure_bigquery, ensure_subscription, ensure_topic

    with pubsub_v1.PublisherClient() as publisher:
        topics = [ensure_topic(publisher, project, t) for t in TOPICS]
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriptions = [ensure_subscription(subscriber, project, s) for s in SUBSCRIPTIONS]
    client = bigquery.Client(project=project)
    try:
        dataset, tables = ensure_bigquery(client)
    finally:
        client.close()
    return {"topics": topics, "subscriptions": subscriptions, "dataset": dataset, "tables": sorted(tables.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True)
    args = parser.parse_args(argv)
    for kind, names in ensure_project_resources(args.project).items():
        print(f"{kind}: {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
