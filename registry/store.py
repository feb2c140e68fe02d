"""Where registered files live, and the registry's constants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorawatch.settings import Settings

ROUTE_ALIASES = ("production", "canary", "shadow")
DEFAULT_TENANT = ""


@dataclass(frozen=True)
class Store:
    """Where registered files live: ``<home>/store``; ``mode`` is copy or reference."""

    root: Path
    mode: str = "copy"

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store named by the settings."""
        return cls(settings.home_dir / "store", settings.registry.store)

    def version_dir(self, adapter: str, version: str) -> Path:
        """The directory a copied version lives in."""
        return self.root / "adapters" / adapter / version

    def archive_file(self, adapter: str, version: str) -> Path:
        """The compressed archive of a version."""
        return self.root / "archive" / adapter / f"{version}.tar.gz"
