"""The adapter registry: base models, adapters and their immutable versions with lineage,
ownership and risk metadata, aliases per route and tenant, promotion, rollback and lifecycle.

The CLI, the dashboard and incidents call ``lorawatch.registry.bases`` (base models),
``versions`` (adapters and their versions), ``aliases`` (promotion, rollback, resolution),
``catalog`` (read views) and ``lifecycle``; files are handled by ``lorawatch.registry.files`` in
the store of ``lorawatch.registry.store``.
"""
