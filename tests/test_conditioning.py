"""Neighbours as context: the (batch, k, dim) tensor, self-exclusion, the collate helper, a model that uses it."""

import numpy as np
import pytest
import torch

from memstore.conditioning import NeighbourCollate
from memstore.errors import InvalidInputError
from memstore.search import ExactSearch


@pytest.fixture
def filled(mem):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    mem.add(x, rng.integers(0, 3, 400))
    return mem, x


def test_context_is_the_nearest_other_rows_with_their_ids(filled):
    mem, x = filled
    ctx = mem.neighbors_as_context(ids=[5, 17, 300], k=4, metric="l2")
    assert ctx.context.shape == (3, 4, 8) and ctx.context.dtype == torch.float32
    _, truth = ExactSearch(x, "l2").search(x[[5, 17, 300]], 5)
    assert ctx.ids.tolist() == truth[:, 1:].tolist()  # the query's own row (nearest, distance 0) is left out
    np.testing.assert_array_equal(ctx.context.numpy(), x[ctx.ids])  # ids attribute each context vector
    with_self = mem.neighbors_as_context(ids=[5], k=1, exclude_self=False, metric="l2")
    assert with_self.ids.tolist() == [[5]]
    new = mem.neighbors_as_context(x[[5]] + 1e-3, k=2, metric="l2")  # a new vector excludes nothing
    assert new.ids[0, 0] == 5


def test_bad_requests_are_refused(filled):
    mem, x = filled
    with pytest.raises(InvalidInputError, match="either queries"):
        mem.neighbors_as_context(x[:2], ids=[0, 1])
    with pytest.raises(InvalidInputError, match=r"ids \[9999\] are not rows"):
        mem.neighbors_as_context(ids=[1, 9999])
    with pytest.raises(InvalidInputError, match="dict items"):
        NeighbourCollate(mem)([(torch.zeros(8), 1)])


class CrossAttention(torch.nn.Module):
    """The smallest model that reads a context: one cross-attention layer from the query to its neighbours."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.attend = torch.nn.MultiheadAttention(dim, 1, batch_first=True)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x, context):
        h, _ = self.attend(x[:, None], context, context)
        return self.out(h[:, 0])


def test_a_model_learns_from_the_context_the_collate_attaches(filled):
    mem, x = filled
    # the target of a row is the mean of its 4 nearest other rows: only the context holds it
    ctx_all = mem.neighbors_as_context(ids=mem.samples.ids, k=4)
    target = ctx_all.context.mean(1)
    data = [{"id": int(i), "x": torch.from_numpy(x[j]), "y": target[j]} for j, i in enumerate(mem.samples.ids)]
    loader = torch.utils.data.DataLoader(data, batch_size=50, shuffle=True, collate_fn=NeighbourCollate(mem, k=4),
                                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = CrossAttention()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        for batch in loader:
            assert not (batch["context_ids"] == batch["id"][:, None]).any()
            loss = torch.nn.functional.mse_loss(model(batch["x"], batch["context"]), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        real = torch.nn.functional.mse_loss(model(torch.from_numpy(x), ctx_all.context), target).item()
        wrong = torch.nn.functional.mse_loss(model(torch.from_numpy(x), ctx_all.context.roll(1, 0)), target).item()
    assert real < 0.1 * wrong  # it uses the neighbours, not the query alone
