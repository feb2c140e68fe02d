"""The adapter registry: base models, adapters and their immutable versions with lineage,
ownership and risk metadata, aliases per route and tenant, promotion, rollback and lifecycle.

The CLI, the dashboard and incidents call the functions in ``registry.service`` and
``registry.lifecycle``; files are handled by ``registry.files``.
"""
