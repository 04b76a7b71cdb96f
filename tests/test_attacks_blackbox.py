"""ART's Square attack (score-based black box) and the random-noise baselines, on a tiny CNN trained here.

The data are 1x8x8 images ``0.5 +- 0.15 * pattern`` plus noise, so about eps = 0.15 is needed to
flip a class: eps = 0.3 must break nearly everything, eps = 1e-4 nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedrobust.attacks.library import square
from fedrobust.attacks.noise import sign_noise, uniform_noise
from fedrobust.attacks.pgd import pgd
from fedrobust.edge.metadata import ModelMetadata
from fedrobust.edge.model import EdgeModel
from fedrobust.export import export_onnx
from fedrobust.predict import torch_logits

N_QUERIES = 300


def _scorer(model):
    """numpy -> numpy logits of a torch model, as the sweep scores its torch targets."""
    return lambda a: torch_logits(model, torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))).numpy()


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny forward passes: a second intra-op thread only adds synchronisation overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    pattern = torch.randint(0, 2, (1, 8, 8), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    y = torch.arange(n) % 2
    noise = 0.05 * torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return (0.5 + 0.15 * (2 * y - 1).float()[:, None, None, None] * pattern + noise).clamp(0, 1), y


@pytest.fixture(scope="module")
def tiny():
    """A conv + BatchNorm + linear net fitted to the synthetic task, and 100 held-out images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test thread setting
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 2))
    x_train, y_train = _data(256, 1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    model.zero_grad(set_to_none=True)
    x, y = _data(100, 2)
    assert _acc(model, x, y) >= 0.95
    return model, x, y


def _acc(model: nn.Module, x: torch.Tensor | np.ndarray, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(x)).argmax(1) == y).float().mean())


def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0, queries: int = N_QUERIES):
    return square(_scorer(model), x, y, eps, queries=queries, seed=seed)


def _linf(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ------------------------------------------------------------------------------------------ budget


@pytest.mark.parametrize("eps", [1e-4, 0.05, 0.3])
def test_square_and_noise_stay_in_budget(tiny, eps):
    model, x, y = tiny
    x_adv, _ = _square(model, x, y, eps, queries=50)
    gen = torch.Generator().manual_seed(0)
    for out in (x_adv, uniform_noise(x, eps, gen), sign_noise(x, eps, gen)):
        assert _linf(out, x) <= eps + 1e-6
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert _linf(sign_noise(x, eps, gen), x) >= eps - 1e-6  # full magnitude, like FGSM


def test_single_logit_numpy_scorer():
    """A pure numpy scorer with one logit (class 1 iff z > 0): presented to ART as the logits (0, z)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(64, 1)).astype(np.float32)
    x = torch.from_numpy(rng.uniform(0.2, 0.8, size=(40, 1, 8, 8)).astype(np.float32))
    scores = lambda a: a.reshape(len(a), -1) @ weights  # noqa: E731
    y = torch.from_numpy((scores(x.numpy())[:, 0] > 0).astype(np.int64))
    x_adv, queries = square(scores, x, y, 0.2, queries=100, seed=1)
    assert _linf(x_adv, x) <= 0.2 + 1e-6
    assert float(((scores(x_adv.numpy())[:, 0] > 0) == y.numpy().astype(bool)).mean()) < 0.5
    assert queries >= 1


# ------------------------------------------------------------------------------------ effectiveness


def test_square_breaks_large_eps_not_tiny_eps(tiny):
    model, x, y = tiny
    clean = _acc(model, x, y)
    assert clean >= 0.9
    x_big, _ = _square(model, x, y, 0.3)
    assert _acc(model, x_big, y) <= 0.3
    x_small, _ = _square(model, x, y, 1e-4)
    assert _acc(model, x_small, y) >= clean - 0.02


@pytest.mark.parametrize("eps", [1e-4, 0.05, 0.12, 0.3])
def test_ordering_noise_ge_square_ge_pgd(tiny, eps):
    """The report's sanity ordering: white-box PGD at least as strong as the black box, random noise the
    weakest. Not a theorem (Square can beat 20-step PGD near the threshold eps), but it holds here."""
    model, x, y = tiny
    x_sq, _ = _square(model, x, y, eps)
    x_pgd = pgd(model, x, y, eps, steps=20, generator=torch.Generator().manual_seed(0))
    sq, white = _acc(model, x_sq, y), _acc(model, x_pgd, y)
    assert sq >= white
    for noise in (uniform_noise, sign_noise):
        assert _acc(model, noise(x, eps, torch.Generator().manual_seed(0)), y) >= sq


# ------------------------------------------------------------------------- queries and determinism


def test_queries_are_counted_and_broken_images_cost_less(tiny):
    model, x, y = tiny
    _, hard = _square(model, x, y, 1e-4)  # nothing breaks: the whole budget, for every image
    _, easy = _square(model, x, y, 0.3)
    assert hard >= N_QUERIES and easy < hard / 2


def test_same_seed_same_result_and_numpy_state_kept(tiny):
    model, x, y = tiny
    np.random.seed(7)
    state = np.random.get_state()[1].copy()
    a, _ = _square(model, x, y, 0.15, seed=3, queries=100)
    assert np.array_equal(np.random.get_state()[1], state)  # ART's global draws are put back
    b, _ = _square(model, x, y, 0.15, seed=3, queries=100)
    c, _ = _square(model, x, y, 0.15, seed=4, queries=100)
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(uniform_noise(x, 0.1, gen()), uniform_noise(x, 0.1, gen()))
    assert torch.equal(sign_noise(x, 0.1, gen()), sign_noise(x, 0.1, gen()))


def test_model_left_untouched(tiny):
    """Attacking a model left in train mode reads BatchNorm statistics and updates nothing."""
    model, x, y = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        _square(model, x, y, 0.3, queries=20)
        assert model.training
    finally:
        model.eval()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


# -------------------------------------------------------------------------------------------- ONNX


def test_square_through_onnxruntime_matches_torch(tiny, tmp_path):
    model, x, y = tiny
    meta = ModelMetadata(dataset="synthetic", task="binary-class", class_names=["neg", "pos"], image_size=8,
                         channels=1, model="tiny", role="student", precision="fp32", weights_sha256="0" * 64)
    path = export_onnx(model, tmp_path / "tiny.onnx", meta)
    eps = 0.3
    x_torch, q_torch = _square(model, x, y, eps)
    edge = EdgeModel(path)
    x_onnx, q_onnx = square(lambda a: edge.predict_logits(a), x, y, eps, queries=N_QUERIES, seed=0)
    acc_torch, acc_onnx = _acc(model, x_torch, y), _acc(model, x_onnx, y)
    assert acc_onnx <= 0.3
    assert abs(acc_onnx - acc_torch) <= 2 / len(x) + 1e-9
    assert _linf(x_onnx, x) <= eps + 1e-6
    assert abs(q_onnx - q_torch) <= 0.1 * q_torch


# ------------------------------------------------------------------------------ worst cases in a sweep cell


def test_autoattack_and_pgd_restarts_keep_the_worst_image(tiny):
    """autoattack is never weaker than FGSM, PGD and APGD-CE (their very images) and, within two images, than
    its other components run alone; PGD with restarts is never weaker than one start (the sweep cells, on a torch
    target)."""
    from fedrobust.config import SweepSection
    from fedrobust.sweep.cells import Cell, craft
    from fedrobust.sweep.targets import Target
    from fedrobust.tasks.registry import task_of

    model, x, y = tiny
    target, task, memo = Target("global", model), task_of("classification"), {}
    w = SweepSection(apgd_steps=20, square_queries=50, pgd_steps=5, pgd_restarts=4)
    eps = 0.15
    worst, _ = craft(Cell("global", "autoattack", eps), target, model, x, y, w, 0, task, memo)
    # the later attacks run on the still-robust images only: only the shared ones (and FGSM's gradient) are kept
    assert sorted(k[1] for k in memo if k[0] != "gradient") == ["apgd-ce", "pgd"]
    parts = {a: craft(Cell("global", a, eps), target, model, x, y, w, 0, task, memo)[0]
             for a in ("fgsm", "pgd", "apgd-ce", "apgd-margin", "square")}
    assert all(_acc(model, worst, y) <= _acc(model, parts[a], y) for a in ("fgsm", "pgd", "apgd-ce"))
    assert all(_acc(model, worst, y) <= _acc(model, p, y) + 2 / len(x) for p in parts.values())
    assert _acc(model, worst, y) < _acc(model, x, y) - 0.3
    restarts, _ = craft(Cell("global", "pgd", eps), target, model, x, y, w, 0, task)
    one, _ = craft(Cell("global", "pgd", eps), target, model, x, y, SweepSection(pgd_steps=5), 0, task)
    assert _acc(model, restarts, y) <= _acc(model, one, y)
    assert _linf(worst, x) <= eps + 1e-6 and _linf(restarts, x) <= eps + 1e-6
