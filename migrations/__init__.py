"""Numbered schema migrations of a memory, and the code that applies them.

Each ``NNNN_name.py`` file in this folder defines ``up(tx)``, which changes the
tables through a :class:`memstore.versioning.Transaction`. A memory records its
schema version in every audit row. Creating a memory applies every migration
in one version ("init"); opening an older memory applies the pending ones, each
as a memory version of its own with an audit row (operation "migrate"), so
applying them twice is impossible and a crash mid-migration rolls back.

This folder ships inside the package as ``memstore.migrations``.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import SchemaVersionError

_FILE = re.compile(r"^(\d{4})_(\w+)\.py$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    module: ModuleType

    def up(self, tx) -> None:
        self.module.up(tx)


def all_migrations() -> list[Migration]:
    """The migrations in this folder, by number."""
    found = []
    for path in sorted(Path(__file__).parent.iterdir()):
        match = _FILE.match(path.name)
        if not match:
            continue
        spec = importlib.util.spec_from_file_location(f"memstore.migrations.m{match[1]}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.append(Migration(int(match[1]), path.stem, module))
    numbers = [m.number for m in found]
    assert numbers == list(range(1, len(found) + 1)), f"migrations must be numbered 1..n: {numbers}"
    return found


def latest_schema_version() -> int:
    return len(all_migrations())


def create(store, upto: int | None = None) -> None:
    """Initialise an empty memory at schema ``upto`` (default: the latest)."""
    migrations = all_migrations()[:upto]
    with store.transaction() as tx:
        if tx.head is not None:  # another process created it while we waited
            return
        for migration in migrations:
            migration.up(tx)
        tx.commit(
            "init",
            "new memory",
            rows_affected=0,
            rows_total=0,
            next_id=0,
            schema_version=len(migrations),
            details={"migrations": [m.name for m in migrations]},
        )


def check_and_upgrade(store, read_only: bool = False, head=None):
    """Refuse a memory from a newer memstore; apply pending migrations to an older one.

    ``head`` is the head just read (read again if None); returns the head after.
    """
    head = head or store.head()
    latest = latest_schema_version()
    if head.schema_version > latest:
        raise SchemaVersionError(
            f"{str(store.path)!r} was written by a newer memstore (schema version "
            f"{head.schema_version}); this memstore knows schema versions up to {latest}. "
            "Upgrade memstore to open it."
        )
    if head.schema_version == latest or read_only:
        return head
    for migration in all_migrations()[head.schema_version :]:
        with store.transaction() as tx:
            if tx.head.schema_version >= migration.number:
                continue  # another process migrated while we waited for the lock
            migration.up(tx)
            tx.commit(
                "migrate",
                migration.name,
                rows_affected=0,
                schema_version=migration.number,
                details={"from": migration.number - 1, "to": migration.number},
            )
    return store.head()
