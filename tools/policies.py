"""Transitional: ``agents/steps.py`` still imports its default policy from here (helper A's branch reads
``Pack.policy`` instead and removes the import; delete this module then). The policy is the pack's."""

from __future__ import annotations

from typing import Any

from tools.packs import load_pack

ShopPolicy = Any  # the pack's own policy type (the shop's: packs.shop.policy.ShopPolicy)


def default_policy() -> Any:
    """The default pack's policy (``Pack.policy``)."""
    return load_pack().policy
