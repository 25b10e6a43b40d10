"""Customer context for each turn through Beam's ``Enrichment`` transform.

- ``context``: the one context shape both stores produce, document validation, the per-worker TTL cache
- ``lookup``: what both handlers share: cache in front of the store, the response row, batching settings
- ``firestore``: ``FirestoreContextHandler``, an ``EnrichmentSourceHandler`` with batched reads
- ``bigtable``: ``BigtableContextHandler``, Beam's ``BigTableEnrichmentHandler`` with the same rules
- ``transform``: ``EnrichCustomerContext``, Turn -> Row -> Enrichment -> EnrichedTurn

Flags, bounds and the Bigtable row layout are ``contract.context_layout``: tools and the stack share them.
"""
