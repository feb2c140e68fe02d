"""The built-in plugins, loaded by every entry point (the CLI, the scheduler, the server, the
demo) before it does any work, the way datasette loads its ``DEFAULT_PLUGINS``.

A lower layer that must let a higher one react exposes a hook (``lorawatch.alerts.hooks``); the
higher layer's module registers with it when imported here. This module sits with the entry
points, above every layer, so importing them breaks no layer rule.
"""

from __future__ import annotations


def load_default_plugins() -> None:
    """Import (and so register) every built-in plugin; safe to call again."""
    # Deferred: importing a plugin registers its hooks, so each entry point decides when.
    import lorawatch.incidents.hooks  # noqa: F401  incidents open from firing alerts
