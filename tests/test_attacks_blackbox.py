"""Square Attack (score-based black box) and the random-noise baselines, on a tiny CNN trained here.

The data are 1x8x8 images ``0.5 +- 0.15 * pattern`` plus noise, so about eps = 0.15 is needed to
flip a class: eps = 0.3 must break nearly everything, eps = 1e-4 nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedrobust.attacks.noise import sign_noise, uniform_noise
from fedrobust.attacks.pgd import pgd
from fedrobust.attacks.square import margins, p_schedule, square_attack
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


def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0, **kw):
    return square_attack(_scorer(model), x.numpy(), y.numpy(), eps, generator=seed, **kw)


def _linf(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ------------------------------------------------------------------------------------------ budget


@pytest.mark.parametrize("eps", [1e-4, 0.05, 0.3])
def test_square_and_noise_stay_in_budget(tiny, eps):
    model, x, y = tiny
    x_adv, _ = _square(model, x, y, eps, n_queries=50)
    gen = torch.Generator().manual_seed(0)
    for out in (x_adv, uniform_noise(x, eps, gen), sign_noise(x, eps, gen)):
        assert _linf(out, x) <= eps + 1e-6
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert x_adv.dtype == np.float32 and x_adv.shape == tuple(x.shape)
    assert _linf(sign_noise(x, eps, gen), x) >= eps - 1e-6  # full magnitude, like FGSM


def test_per_image_eps(tiny):
    model, x, y = tiny
    eps = np.linspace(0.0, 0.3, len(x)).astype(np.float32)
    x_adv, queries = _square(model, x, y, eps, n_queries=50)
    delta = np.abs(x_adv - x.numpy()).reshape(len(x), -1).max(1)
    assert np.all(delta <= eps + 1e-6)
    assert np.array_equal(x_adv[0], x[0].numpy()) and queries[0] == 1  # eps = 0: checked, not attacked
    noisy = uniform_noise(x, torch.from_numpy(eps))
    assert np.all(np.abs((noisy - x).numpy()).reshape(len(x), -1).max(1) <= eps + 1e-6)


@pytest.mark.parametrize("shape,classes", [((6, 3, 5, 9), 4), ((6, 1, 4, 4), 1)])
def test_any_numpy_scorer(shape, classes):
    """Pure numpy scorers (no torch): RGB non-square images, and a single-logit binary head."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(int(np.prod(shape[1:])), classes)).astype(np.float32)
    x = rng.uniform(0.2, 0.8, size=shape).astype(np.float32)
    scores = lambda a: a.reshape(len(a), -1) @ weights  # noqa: E731
    y = scores(x).argmax(1) if classes > 1 else (scores(x)[:, 0] > 0).astype(np.int64)
    x_adv, queries = square_attack(scores, x, y, 0.1, n_queries=100, generator=1)
    assert _linf(x_adv, x) <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert np.all(margins(scores(x), y) >= 0)
    assert margins(scores(x_adv), y).mean() < margins(scores(x), y).mean()
    assert np.all(queries <= 101)


# ------------------------------------------------------------------------------------ effectiveness


def test_square_breaks_large_eps_not_tiny_eps(tiny):
    model, x, y = tiny
    clean = _acc(model, x, y)
    assert clean >= 0.9
    x_big, _ = _square(model, x, y, 0.3, n_queries=N_QUERIES)
    assert _acc(model, x_big, y) <= 0.3
    x_small, _ = _square(model, x, y, 1e-4, n_queries=N_QUERIES)
    assert _acc(model, x_small, y) >= clean - 0.02


@pytest.mark.parametrize("eps", [1e-4, 0.05, 0.12, 0.3])
def test_ordering_noise_ge_square_ge_pgd(tiny, eps):
    """The report's sanity ordering: white-box PGD at least as strong as the black box (here
    1.0/1.0, 0.93/0.89, 0/0), random noise the weakest. Not a theorem: with a bigger query budget
    Square can beat 20-step PGD near the threshold eps, hence the tolerance in the next test."""
    model, x, y = tiny
    x_sq, _ = _square(model, x, y, eps, n_queries=N_QUERIES)
    x_pgd = pgd(model, x, y, eps, steps=20, generator=torch.Generator().manual_seed(0))
    sq, white = _acc(model, x_sq, y), _acc(model, x_pgd, y)
    assert sq >= white
    for noise in (uniform_noise, sign_noise):
        assert _acc(model, noise(x, eps, torch.Generator().manual_seed(0)), y) >= sq


def test_square_near_threshold_is_close_to_pgd(tiny):
    """At eps where accuracy is in transition both attacks bite, and they land within a few percent
    of each other (either can be ahead: PGD is local, Square samples ball corners)."""
    model, x, y = tiny
    eps = 0.15
    x_sq, _ = _square(model, x, y, eps, n_queries=N_QUERIES)
    x_pgd = pgd(model, x, y, eps, steps=20, generator=torch.Generator().manual_seed(0))
    sq, white, clean = _acc(model, x_sq, y), _acc(model, x_pgd, y), _acc(model, x, y)
    assert sq < clean - 0.3 and white < clean - 0.3
    assert abs(sq - white) <= 0.1
    assert _acc(model, uniform_noise(x, eps, torch.Generator().manual_seed(0)), y) > sq


# ------------------------------------------------------------------------- queries and determinism


def test_queries_accounting(tiny):
    model, x, y = tiny
    y_wrong = y.clone()
    y_wrong[:10] = 1 - y_wrong[:10]  # misclassified before any perturbation
    x_adv, queries = _square(model, x, y_wrong, 0.3, n_queries=N_QUERIES)
    assert queries.dtype.kind == "i" and queries.shape == (len(x),)
    assert np.all(queries[:10] == 1) and np.array_equal(x_adv[:10], x[:10].numpy())
    assert np.all(queries <= N_QUERIES + 1) and np.all(queries[10:] >= 2)
    _, stuck = _square(model, x, y, 1e-4, n_queries=N_QUERIES)
    assert stuck.max() == N_QUERIES + 1  # unbreakable images spend the whole budget, no more


def test_schedule_halves_p_like_the_paper():
    assert p_schedule(0.05, 10, 10_000) == 0.05 and p_schedule(0.05, 11, 10_000) == 0.025
    assert p_schedule(0.05, 9_999, 10_000) == 0.05 / 512
    assert p_schedule(0.05, 11, 1_000) == p_schedule(0.05, 110, 10_000)  # rescaled to the budget


def test_same_seed_same_result(tiny):
    model, x, y = tiny
    a, qa = _square(model, x, y, 0.15, seed=3, n_queries=100)
    b, qb = square_attack(_scorer(model), x.numpy(), y.numpy(), 0.15, n_queries=100,
                          generator=np.random.default_rng(3))
    c, _ = _square(model, x, y, 0.15, seed=4, n_queries=100)
    assert np.array_equal(a, b) and np.array_equal(qa, qb)
    assert not np.array_equal(a, c)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(uniform_noise(x, 0.1, gen()), uniform_noise(x, 0.1, gen()))
    assert torch.equal(sign_noise(x, 0.1, gen()), sign_noise(x, 0.1, gen()))


def test_model_left_untouched(tiny):
    """Attacking a model left in train mode reads BatchNorm statistics and updates nothing."""
    model, x, y = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        _square(model, x, y, 0.3, n_queries=20)
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
    x_torch, q_torch = _square(model, x, y, eps, n_queries=N_QUERIES)
    acc_torch = _acc(model, x_torch, y)
    edge = EdgeModel(path)
    scorers = {"edge": lambda a: edge.predict_logits(np.ascontiguousarray(a, dtype=np.float32))}
    for name, scorer in scorers.items():
        x_onnx, q_onnx = square_attack(scorer, x.numpy(), y.numpy(), eps, n_queries=N_QUERIES, generator=0)
        acc_onnx = _acc(model, x_onnx, y)
        assert acc_onnx <= 0.3, name
        assert abs(acc_onnx - acc_torch) <= 1 / len(x) + 1e-9, name
        assert _linf(x_onnx, x) <= eps + 1e-6
        # Per-image random streams: float noise in one image's decision does not reshuffle the others.
        same = np.all(x_onnx == x_torch, axis=(1, 2, 3)).mean()
        assert same >= 0.9, (name, same)
        assert abs(int(q_onnx.sum()) - int(q_torch.sum())) <= 0.1 * q_torch.sum()
