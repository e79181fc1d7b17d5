"""Fused views (one forward pass, BatchNorm statistics per view) against separate passes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from calibench import forward_views, get_method
from calibench.models import build_backbone
from calibench.views import view_batching


def _run(model: nn.Module, views: list[torch.Tensor], fused: bool) -> list[torch.Tensor]:
    with view_batching(fused):
        outs = forward_views(model, views)
    sum((i + 1) * (o.square().sum() + o.sum()) for i, o in enumerate(outs)).backward()
    return outs


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        scale = p.grad.abs().max().clamp_min(1e-6)
        # float32 sums in another order: up to 1.5e-4 of the largest gradient on an AMD EPYC;
        # mixing the views' batch statistics changes gradients at order 1
        assert (p.grad - q.grad).abs().max() / scale < 1e-3, name
    for (name, u), v in zip(a.named_buffers(), b.buffers(), strict=True):
        if u.dtype == torch.long:
            assert torch.equal(u, v), name
        else:
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6, msg=name)


CASES = [(b, s, 32) for b in ("small_cnn", "small_resnet") for s in ((8, 8), (8, 24), (4, 4, 8))]


@pytest.mark.parametrize(
    ("backbone", "sizes", "image_size"),
    [*CASES, ("resnet50", (2, 6), 32), ("densenet121", (2, 6), 32)],
)
def test_fused_views_equal_separate_passes(backbone, sizes, image_size):
    torch.manual_seed(0)
    separate = build_backbone(backbone, 10, 3, image_size).train()
    fused = copy.deepcopy(separate)
    views = [torch.randn(n, 3, image_size, image_size) for n in sizes]
    a = _run(separate, views, fused=False)
    b = _run(fused, views, fused=True)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    _assert_same_state(separate, fused)
    tracked = [m.num_batches_tracked for m in fused.modules() if isinstance(m, _BatchNorm)]
    assert tracked and all(int(t) == len(sizes) for t in tracked)


def test_fused_views_restore_batch_norm_even_after_an_error():
    model = build_backbone("small_cnn", 10, 1, 28).train()
    views = [torch.randn(4, 1, 28, 28), torch.randn(4, 3, 28, 28)]
    with view_batching(True), pytest.raises(RuntimeError):
        forward_views(model, views)
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert layers and all("forward" not in vars(m) for m in layers)


class _CountingModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        return self.inner(x)


def test_views_run_separately_unless_fused_and_with_sync_batch_norm():
    inner = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    views = [torch.randn(2, 4), torch.randn(6, 4)]
    model = _CountingModel(inner)
    forward_views(model, views)
    with view_batching(True):
        forward_views(model, views)
    assert model.batches == [2, 6, 8]
    synced = _CountingModel(nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(inner)))
    with view_batching(True):
        forward_views(synced, views)
    assert synced.batches == [2, 6]


@pytest.mark.parametrize("name", ["rankmixup_mrl", "rankmixup_mndcg"])
def test_rankmixup_losses_equal_fused_and_separate(name):
    torch.manual_seed(1)
    separate = build_backbone("small_resnet", 10, 3, 32).train()
    fused = copy.deepcopy(separate)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = []
    for model, on in ((separate, False), (fused, True)):
        method = get_method(name)
        method.seed(3)
        with view_batching(on):
            out = method.loss(model, x, y)
        out.total.backward()
        losses.append(out.total.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    _assert_same_state(separate, fused)
