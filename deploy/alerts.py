"""The SLO alert policies (deploy/monitoring/*.json) for one deployment.

The checked-in policies name the job ``supportflow`` and the inbound subscription
``chat-inbound-pipeline``; ``render`` swaps in this deployment's names.

    python -m deploy.alerts deploy/monitoring/freshness-slo.json --job_name supportflow > policy.json
    gcloud alpha monitoring policies create --policy-from-file policy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.options import INBOUND_SUBSCRIPTION as DEFAULT_INBOUND_SUBSCRIPTION

MONITORING_DIR = Path(__file__).resolve().parent / "monitoring"
POLICIES = ("turn-latency-slo.json", "freshness-slo.json")
DEFAULT_JOB_NAME = "supportflow"


def render(
    path: Path, job_name: str = DEFAULT_JOB_NAME, inbound_subscription: str = DEFAULT_INBOUND_SUBSCRIPTION
) -> str:
    policy = json.loads(Path(path).read_text())
    for condition in policy["conditions"]:
        query = condition["conditionPrometheusQueryLanguage"]
        query["query"] = (
            query["query"]
            .replace(f'job_name="{DEFAULT_JOB_NAME}"', f'job_name="{job_name}"')
            .replace(f'subscription_id="{DEFAULT_INBOUND_SUBSCRIPTION}"', f'subscription_id="{inbound_subscription}"')
        )
    return json.dumps(policy, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy", type=Path)
    parser.add_argument("--job_name", default=DEFAULT_JOB_NAME)
    parser.add_argument("--inbound_subscription", default=DEFAULT_INBOUND_SUBSCRIPTION)
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.policy, args.job_name, args.inbound_subscription))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
