"""Customer context for each turn, on the hot path: Beam's ``Enrichment`` transform over Firestore
(default) or Bigtable (``--context_store bigtable``). The code lives in ``pipeline/enrichment/``.

Rule for a missing context (documented in docs/context.md): the turn always goes on.
An unknown customer gets ``customer_unknown``; a store that stays down or slow after the retries gets
``context_unavailable``; documents of the wrong shape are dropped and the turn gets ``context_malformed``.
The agent sees the flag (and says it cannot look things up), and the eval row records it. Nothing is
dead-lettered here, because a reply without context beats no reply.
"""

from __future__ import annotations

from pipeline.enrichment.bigtable import BigtableContextHandler
from pipeline.enrichment.firestore import FirestoreContextHandler
from pipeline.enrichment.transform import EnrichCustomerContext, context_handler

__all__ = ["BigtableContextHandler", "EnrichCustomerContext", "FirestoreContextHandler", "context_handler"]
