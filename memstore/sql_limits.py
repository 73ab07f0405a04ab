"""What one SQL query may take, in a module of its own: the CLI shows these defaults in
``memstore sql --help`` without importing DuckDB (memstore.sql, which re-exports the class).

>>> SQLLimits()
SQLLimits(timeout=60.0, memory_limit='4GB')
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInputError


@dataclass(frozen=True)
class SQLLimits:
    """What one query of ``mem.sql`` may take: wall-clock seconds and DuckDB memory.

    Set them with ``memstore.open(path, sql_timeout=..., sql_memory_limit=...)``
    (CLI: ``memstore sql --timeout --memory-limit``).

    Attributes
    ----------
    timeout : float
        Seconds one query may run; ``math.inf`` for no limit.
    memory_limit : str
        A DuckDB memory size such as ``"4GB"`` or ``"500MB"``: what the query's
        operators (hash tables, sorts) may hold; the result itself is not counted.
    """

    timeout: float = 60.0
    memory_limit: str = "4GB"

    def __post_init__(self):
        if not self.timeout > 0:  # also NaN
            raise InvalidInputError(f"sql_timeout must be a positive number of seconds, got {self.timeout!r}")
