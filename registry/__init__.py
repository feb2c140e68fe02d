"""The adapter registry: base models, adapters and their immutable versions with lineage,
ownership and risk metadata, aliases per route and tenant, promotion, rollback and lifecycle.

The CLI, the dashboard and incidents call the functions in ``lorawatch.registry.service`` and
``lorawatch.registry.lifecycle``; files are handled by ``lorawatch.registry.files``.
"""
