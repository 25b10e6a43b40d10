"""Customer context for each turn through Beam's ``Enrichment`` transform.

- ``context``: the one context shape both stores produce, document validation, the per-worker TTL cache
- ``lookup``: what both handlers share: cache in front of the store, the response row, batching settings
- ``firestore``: ``FirestoreContextHandler``, an ``EnrichmentSourceHandler`` with batched reads
- ``bigtable``: ``BigtableContextHandler``, Beam's ``BigTableEnrichmentHandler`` with the same rules
- ``transform``: ``EnrichCustomerContext``, Turn -> Row -> Enrichment -> EnrichedTurn

Flags and the Bigtable row layout are ``contract.context_layout``: tools and the stack share them. What a
context holds beside the profile, and how much of it, is the pack's (``Pack.context``, ``--pack``).

Rule for a missing context (documented in docs/context.md): the turn always goes on.
An unknown customer gets ``customer_unknown``; a store that stays down or slow after the retries gets
``context_unavailable``; documents of the wrong shape are dropped and the turn gets ``context_malformed``.
The agent sees the flag (and says it cannot look things up), and the eval row records it. Nothing is
dead-lettered here, because a reply without context beats no reply.
"""
