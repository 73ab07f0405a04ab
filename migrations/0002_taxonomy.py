"""Schema 2: the ``taxonomy`` table, a label hierarchy versioned like sample state.

Rows are (node, parent, name, level) with a validity interval of memory
versions; mem.sql shows those valid at the memory's version.
"""

from memstore.schema import TAXONOMY_SCHEMA, TAXONOMY_TABLE


def up(tx):
    if not tx.has_table(TAXONOMY_TABLE):
        tx.create_table(TAXONOMY_TABLE, TAXONOMY_SCHEMA)
