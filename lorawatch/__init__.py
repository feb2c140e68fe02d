"""LoraWatch: watch LoRA adapters in production.

The core package holds settings, the database layer, the CLI and model loading. The concepts
live in the top-level packages beside it: ``registry``, ``monitors``, ``alerts``,
``incidents``, ``serving`` and ``app``.
"""

from __future__ import annotations

__version__ = "0.1.0"
