"""Schema 1: the commit log (audit) and tags.

The sample tables are created by the first ``add``, which knows the vector
dimension and the label type (see memstore/schema.py).
"""

from memstore.schema import AUDIT_SCHEMA, AUDIT_TABLE, TAGS_SCHEMA, TAGS_TABLE


def up(tx):
    tx.create_table(AUDIT_TABLE, AUDIT_SCHEMA)
    tx.create_table(TAGS_TABLE, TAGS_SCHEMA)
