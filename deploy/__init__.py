"""Deployment tooling (not shipped to workers): Flex Template metadata and the graph's update snapshot.

Run from the repository root: ``python -m deploy.template --check`` and ``python -m deploy.transforms --check``
(``--write`` regenerates the checked-in files). See docs/operations.md, "Deploying on Dataflow".
"""
