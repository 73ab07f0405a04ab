"""schemathesis against the server's OpenAPI schema: no request the schema allows makes a server error.

For every operation of the schema, Hypothesis generates requests (valid ones, and the schema's
edge cases: empty strings, huge numbers, odd unicode, ragged vectors); each answer must be a
success or a clear 4xx, never a 500. Writes are allowed, so forget is exercised too.

(schemathesis's own pytest plugin does not run under pytest 9: the operations are driven here
with Hypothesis's ``@given`` over each operation's strategy, which is what the plugin does.)
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from memstore.server import create_app

#: requests generated per operation
EXAMPLES = 20


def operations(path, encoder=None):
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(path, allow_writes=True, encoder=encoder))
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture(params=["vectors", "images"])
def memory(request, served, tmp_path, rng):
    """The served memory of conftest (300 x 16, three versions), or one of 40 images with thumbnails
    and an encoder, so that uploads are encoded."""
    if request.param == "vectors":
        return served.path, None
    import numpy as np
    import torch

    import memstore
    from memstore.encoders import TorchEncoder

    encoder = TorchEncoder(torch.nn.Flatten(), dim=48, name="test/flatten", device="cpu")
    mem = memstore.open(tmp_path / "images.mem")
    mem.add_images(rng.integers(0, 256, (40, 4, 4), dtype=np.uint8), np.arange(40) % 2, encoder=encoder)
    return mem.path, encoder


def test_the_schema_lists_every_operation(served):
    named = {(op.method.upper(), op.path) for op in operations(served.path)}
    assert {("GET", "/api/overview"), ("GET", "/api/samples"), ("GET", "/api/rows/{row_id}"),
            ("GET", "/api/rows/{row_id}/explain"), ("GET", "/api/rows/{row_id}/thumbnail"),
            ("GET", "/api/quality"), ("GET", "/api/versions"), ("GET", "/api/diff"), ("POST", "/api/sql"),
            ("POST", "/api/search"), ("POST", "/api/classify"), ("POST", "/api/explain"),
            ("POST", "/api/explain-image"), ("GET", "/api/rows.arrow"), ("POST", "/api/forget")} <= named


@pytest.mark.parametrize("name", ["GET /api/overview", "GET /api/samples", "GET /api/rows/{row_id}",
                                  "GET /api/rows/{row_id}/explain", "GET /api/rows/{row_id}/thumbnail",
                                  "GET /api/quality", "GET /api/versions", "GET /api/diff", "POST /api/sql",
                                  "POST /api/search", "POST /api/classify", "POST /api/explain",
                                  "POST /api/explain-image", "GET /api/rows.arrow", "POST /api/forget"])
def test_no_request_makes_a_server_error(memory, name):
    operation = next(op for op in operations(*memory) if f"{op.method.upper()} {op.path}" == name)

    @given(operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def call(case):
        case.validate_response(case.call(), checks=[not_a_server_error])

    call()
