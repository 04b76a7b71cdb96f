import numpy as np
import pytest

from fedrobust.data.partition import label_table, partition_indices
from fedrobust.errors import ConfigError
from launcher.cli import main

LABELS = np.repeat(np.arange(4), [300, 150, 40, 10])  # imbalanced, 4 classes


def _check_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n


@pytest.mark.parametrize(("scheme", "kwargs"),
                         [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("dirichlet", {"alpha": 100.0}),
                          ("shards", {"labels_per_client": 2})])
def test_exact_cover_and_determinism(scheme, kwargs):
    parts = partition_indices(LABELS, 7, scheme, seed=3, min_samples=5, **kwargs)
    _check_exact_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 5
    again = partition_indices(LABELS, 7, scheme, seed=3, min_samples=5, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(LABELS, 7, scheme, seed=4, min_samples=5, **kwargs)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_is_balanced():
    sizes = [len(p) for p in partition_indices(LABELS, 10, "iid")]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def skew(alpha):
        table = label_table(LABELS, partition_indices(LABELS, 10, "dirichlet", alpha=alpha, seed=1), 4)
        share = table / table.sum(1, keepdims=True)
        return float(np.abs(share - np.bincount(LABELS) / len(LABELS)).sum(1).mean())

    assert skew(0.1) > skew(1.0) > skew(100.0)


def test_shards_hold_exactly_k_labels():
    for k in (1, 2, 3):
        parts = partition_indices(LABELS, 8, "shards", labels_per_client=k, seed=0)
        assert all(len(np.unique(LABELS[p])) == k for p in parts)


def test_impossible_settings_fail_clearly():
    with pytest.raises(ConfigError, match="exceeds"):
        partition_indices(LABELS, 100, "iid", min_samples=10)
    with pytest.raises(ConfigError, match="Dirichlet"):
        partition_indices(LABELS, 40, "dirichlet", alpha=0.01, min_samples=10)
    with pytest.raises(ConfigError, match="scheme"):
        partition_indices(LABELS, 2, "random")


def test_partition_command_prints_the_table(data_root, capsys):
    code = main(["partition", "--dataset", "breastmnist", "--clients", "10", "--scheme", "dirichlet",
                 "--alpha", "0.5", "--data-root", str(data_root)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    rows = [line.split() for line in out if line.split() and line.split()[0].isdigit()]
    assert len(rows) == 10
    assert sum(int(r[-1]) for r in rows) == 546
    assert out[-1].split()[-1] == "546"
