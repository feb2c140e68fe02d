"""Version lifecycle: archive unused versions (compressed), restore them byte-identical, and
report data-freshness expiry and overdue reviews (which alerts read later)."""

from __future__ import annotations

import os
import tarfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db.models import AdapterAlias, AdapterVersion
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError
from lorawatch.registry import files
from lorawatch.registry.store import Store
from lorawatch.registry.versions import get_version


def status(version: AdapterVersion, now: datetime, default_review_days: int) -> dict[str, Any]:
    """Expiry and review status of a version at ``now``."""
    expires = version.data_expires_on
    cadence = version.review_cadence_days or default_review_days
    last_review = version.last_reviewed_at or version.created_at
    review_due = last_review + timedelta(days=cadence)
    return {
        "data_expires_on": expires.isoformat() if expires else None,
        "expired": bool(expires and expires <= now.date()),
        "review_due": review_due,
        "review_overdue": review_due <= now,
        "last_reviewed_at": version.last_reviewed_at,
    }


def mark_reviewed(
    session: Session, *, adapter: str, version: str, actor: str, note: str | None = None
) -> AdapterVersion:
    """Record that a version was reviewed now (restarts its review cadence)."""
    row = get_version(session, adapter, version)
    row.last_reviewed_at = utcnow()
    audit.record(
        session,
        actor=actor,
        action="version.review",
        object_type="adapter_version",
        object_id=f"{adapter}@{version}",
        reason=note,
    )
    return row


def _alias_targets(session: Session) -> set[int]:
    return set(session.scalars(select(AdapterAlias.version_id)))


def archive_candidates(
    session: Session, older_than_days: int, now: datetime | None = None
) -> list[tuple[AdapterVersion, str | None]]:
    """Versions unused for ``older_than_days``, with the reason each is skipped (None: archive it)."""
    now = now or utcnow()
    cutoff = now - timedelta(days=older_than_days)
    targets = _alias_targets(session)
    result: list[tuple[AdapterVersion, str | None]] = []
    for row in session.scalars(
        select(AdapterVersion)
        .where(AdapterVersion.state == "active", AdapterVersion.last_used_at < cutoff)
        .order_by(AdapterVersion.id)
    ):
        if row.id in targets:
            result.append((row, "an alias points at it"))
        elif row.storage != "copy":
            result.append((row, "referenced files are not LoraWatch's to archive"))
        else:
            result.append((row, None))
    return result


def archive(
    session: Session,
    store: Store,
    *,
    older_than_days: int,
    actor: str,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Compress and remove versions nobody used for ``older_than_days``; never an alias target."""
    report = []
    for row, skip in archive_candidates(session, older_than_days, now):
        name = f"{row.adapter.name}@{row.version}"
        entry = {"version": name, "archived": False, "skipped": skip, "last_used_at": row.last_used_at}
        report.append(entry)
        if skip or dry_run:
            continue
        directory = Path(row.path)
        files.verify_files(directory, row.files, name)
        target = store.archive_file(row.adapter.name, row.version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".partial")
        with tarfile.open(staging, "w:gz") as tar:
            for rel in sorted(row.files):
                tar.add(directory / rel, arcname=rel, recursive=False)
        os.replace(staging, target)
        row.state = "archived"
        row.archive_path = str(target)
        row.archived_at = now or utcnow()
        audit.record(
            session,
            actor=actor,
            action="version.archive",
            object_type="adapter_version",
            object_id=name,
            details={"archive": str(target)},
        )
        session.flush()
        # The directory goes only once the rows say "archived"; a crash before leaves both.
        files.remove_tree(directory)
        entry["archived"] = True
        entry["archive"] = str(target)
    return report


def restore(session: Session, store: Store, *, adapter: str, version: str, actor: str) -> AdapterVersion:
    """Unpack an archived version back into the store and check every hash."""
    row = get_version(session, adapter, version)
    if row.state != "archived":
        raise ConflictError(f"{adapter}@{version} is not archived", fix="nothing to restore")
    if row.archive_path is None:
        raise ConflictError(f"{adapter}@{version} is archived but its archive is not recorded", fix="register it again")
    archive_path = Path(row.archive_path)
    directory = Path(row.path)
    staging = directory.parent / f".restore-{version}"
    files.remove_tree(staging)
    staging.mkdir(parents=True)
    with tarfile.open(archive_path, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            if member.name not in row.files or not member.isfile():
                raise ConflictError(
                    f"archive {archive_path} holds an unexpected entry {member.name!r}",
                    fix="the archive was tampered with; restore it from backup",
                )
        tar.extractall(staging, members=members, filter="data")
    try:
        files.verify_files(staging, row.files, f"{adapter}@{version}")
    except Exception:
        files.remove_tree(staging)
        raise
    for rel in row.files:
        os.chmod(staging / rel, 0o444)
    files.remove_tree(directory)
    os.replace(staging, directory)
    row.state = "active"
    row.archived_at = None
    row.last_used_at = utcnow()
    audit.record(
        session, actor=actor, action="version.restore", object_type="adapter_version", object_id=f"{adapter}@{version}"
    )
    session.flush()
    archive_path.unlink()
    row.archive_path = None
    return row
