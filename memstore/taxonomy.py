"""Label hierarchy: a tree of class names, and labels read at any of its levels.

A taxonomy is a set of nodes, each with at most one parent; roots have none
and sit at level 0, their children at level 1, and so on. Row labels are
nodes (usually leaves). Reading labels *at level L* replaces each label by its
ancestor at level L; a label that sits above L (a row labelled only coarsely)
stays as it is, the finest class known for that row. This is what lets a
memory be refined a part at a time: relabel some rows to finer classes and
predict at the fine level, while the coarse level still reads every row.

The taxonomy is versioned with the memory (``Memory.set_taxonomy``) and shown
by SQL as the ``taxonomy`` table (node, parent, name, level), e.g. rows per
coarse class::

    SELECT t.parent AS coarse, count(*) FROM samples s JOIN taxonomy t ON t.node = s.label
    GROUP BY 1

Examples
--------
>>> t = taxonomy_table({"shoe": None, "sneaker": "shoe", "sandal": "shoe", "bag": None})
>>> sorted(zip(t["node"].to_pylist(), t["level"].to_pylist()))
[('bag', 0), ('sandal', 1), ('shoe', 0), ('sneaker', 1)]
>>> import pyarrow as pa
>>> labels_at_level(t, pa.array(["sneaker", "bag", "sandal"]), 0).to_pylist()
['shoe', 'bag', 'shoe']
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidInputError


def taxonomy_table(parents, names: dict | None = None) -> pa.Table:
    """Check a hierarchy and give its (node, parent, name, level) table.

    Parameters
    ----------
    parents : {node: parent or None}, or a table (Arrow, pandas, or a dict of
        columns) with ``node`` and ``parent`` columns (and optionally ``name``).
        Every parent must itself be a node; roots have parent None.
    names : optional {node: display name}; default the node itself.

    Raises InvalidInputError for an empty hierarchy, an empty or repeated
    node, an unknown parent, or a cycle.
    """
    nodes, parent_of, names = _as_mapping(parents, names)
    if not nodes:
        raise InvalidInputError("the taxonomy has no nodes; pass {node: parent or None, ...}")
    for node in nodes:
        if not isinstance(node, str) or not node:
            raise InvalidInputError(f"taxonomy nodes are non-empty strings, got {node!r}")
    unknown = sorted({p for p in parent_of.values() if p is not None and p not in parent_of})
    if unknown:
        raise InvalidInputError(
            f"parent(s) {unknown[:5]} are not nodes of the taxonomy; add them as nodes "
            "(with their own parent, or None for a root)")
    levels = {}
    for node in nodes:
        path = [node]
        while parent_of[path[-1]] is not None and path[-1] not in levels:
            path.append(parent_of[path[-1]])
            if path[-1] in path[:-1]:
                cycle = path[path.index(path[-1]):]
                raise InvalidInputError(f"the taxonomy has a cycle: {' -> '.join(cycle)}; "
                                        "every chain of parents must end at a root (parent None)")
        base = levels.get(path[-1], 0)  # a root, or a node whose level is known
        for depth, n in enumerate(reversed(path)):
            levels.setdefault(n, base + depth)
    return pa.table({
        "node": pa.array(nodes, pa.string()),
        "parent": pa.array([parent_of[n] for n in nodes], pa.string()),
        "name": pa.array([names.get(n, n) for n in nodes], pa.string()),
        "level": pa.array([levels[n] for n in nodes], pa.int32()),
    })


def _as_mapping(parents, names):
    if isinstance(parents, dict) and not ("node" in parents and not isinstance(parents["node"], (str, type(None)))):
        nodes = list(parents)
        return nodes, dict(parents), dict(names or {})
    try:
        table = pa.table(parents)
    except (TypeError, ValueError, pa.ArrowInvalid) as exc:
        raise InvalidInputError(
            f"a taxonomy is {{node: parent}} or a table with node and parent columns, "
            f"got {type(parents).__name__}") from exc
    missing = {"node", "parent"} - set(table.column_names)
    if missing:
        raise InvalidInputError(f"the taxonomy table lacks column(s) {sorted(missing)}; "
                                f"it has {table.column_names}")
    nodes = table["node"].to_pylist()
    repeated = sorted({n for n in nodes if nodes.count(n) > 1}) if len(set(nodes)) != len(nodes) else []
    if repeated:
        raise InvalidInputError(f"node(s) {repeated[:5]} appear more than once in the taxonomy")
    table_names = dict(zip(nodes, table["name"].to_pylist())) if "name" in table.column_names else {}
    return nodes, dict(zip(nodes, table["parent"].to_pylist())), {**table_names, **(names or {})}


def levels(taxonomy: pa.Table) -> list[int]:
    """The levels a taxonomy has, ascending."""
    return sorted(set(taxonomy["level"].to_pylist()))


def labels_at_level(taxonomy: pa.Table, labels: pa.Array, level: int) -> pa.Array:
    """Each label replaced by its ancestor at ``level`` (labels above it stay as they are).

    Labels are matched to nodes as strings; the result is a string array.
    Raises InvalidInputError for a level the taxonomy does not have, or labels
    that are not nodes of it.
    """
    have = levels(taxonomy)
    if isinstance(level, bool) or not isinstance(level, int) or level not in have:
        raise InvalidInputError(f"level {level!r} is not a level of the taxonomy; its levels are {have}")
    text = pc.cast(labels, pa.string())
    nodes = taxonomy["node"].to_pylist()
    parent_of = dict(zip(nodes, taxonomy["parent"].to_pylist()))
    level_of = dict(zip(nodes, taxonomy["level"].to_pylist()))
    distinct = pc.unique(text).to_pylist()
    unknown = [lab for lab in distinct if lab not in parent_of]
    if unknown:
        raise InvalidInputError(
            f"label(s) {unknown[:5]} are not nodes of the taxonomy; add them with mem.set_taxonomy")
    at_level = {}
    for lab in distinct:
        node = lab
        while level_of[node] > level:
            node = parent_of[node]
        at_level[lab] = node
    keys = pa.array(list(at_level), pa.string())
    return pa.array(list(at_level.values()), pa.string()).take(pc.index_in(text, keys))


__all__ = ["labels_at_level", "levels", "taxonomy_table"]
