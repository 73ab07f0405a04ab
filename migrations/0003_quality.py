"""Schema 3: ``sample_state.wrong_count``, how often a row was a wrong-label neighbour.

Null until ``Memory.estimate_quality`` fills it (see memstore/quality.py). Adding
a nullable column is a metadata change in Lance: no row is rewritten.
"""

import pyarrow as pa

from memstore.schema import STATE_TABLE


def up(tx):
    if tx.has_table(STATE_TABLE) and "wrong_count" not in tx.table(STATE_TABLE).schema.names:
        tx.table(STATE_TABLE).add_columns([pa.field("wrong_count", pa.int32())])
