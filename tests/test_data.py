"""advsmooth.data: digits split, loaders, npz layouts, subsets, errors, registry listing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_shared

from advsmooth import data


def test_digits_shapes_dtypes_ranges():
    for split, size in (("train", 1438), ("test", 359)):
        x, y = data.load("digits", split=split)
        assert x.shape == (size, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (size,) and y.dtype == torch.int64
        assert float(x.min()) == 0.0 and 0.99 < float(x.max()) <= 1.0
        assert set(y.tolist()) == set(range(10))
        assert data.info("digits").sizes[split] == size


def test_digits_split_deterministic_disjoint_stratified():
    tr, te = data.digits_indices("train"), data.digits_indices("test")
    assert len(np.intersect1d(tr, te)) == 0
    assert len(tr) + len(te) == 1797
    assert np.array_equal(np.union1d(tr, te), np.arange(1797))
    # deterministic: recomputing the split from scratch gives the same indices
    from sklearn.datasets import load_digits

    target = load_digits().target
    tr2, te2 = data.stratified_split(target, data.DIGITS_TEST_FRACTION, data.DIGITS_SEED)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    # stratified: every class has ~20 % of its samples in the test split
    for c in range(10):
        frac = (target[te] == c).sum() / (target == c).sum()
        assert abs(frac - 0.2) < 0.01
    # another seed gives another split
    _, te3 = data.stratified_split(target, 0.2, 1)
    assert not np.array_equal(te, te3)


def test_digits_match_sklearn_upsampled():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = data.load("digits", split="test")
    idx = data.digits_indices("test")
    assert torch.equal(y, torch.from_numpy(d.target[idx]).long())
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(d.images[idx] / 16.0).float().unsqueeze(1), size=(28, 28),
        mode="bilinear", align_corners=False)
    assert torch.allclose(x, ref.clamp(0, 1), atol=1e-6)


def test_load_returns_independent_copies():
    x1, _ = data.load("digits", split="test")
    x1.zero_()
    x2, _ = data.load("digits", split="test")
    assert float(x2.max()) > 0


def test_npz_uint8_hw_and_hwc_and_float(tmp_path):
    g = np.random.default_rng(0)
    gray = g.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    rgb = g.integers(0, 256, (4, 6, 7, 3), dtype=np.uint8)
    flt = g.random((3, 2, 5, 5)).astype(np.float32)
    y5, y4, y3 = np.arange(5) % 3, np.arange(4), np.array([1, 0, 1])
    np.savez(tmp_path / "g.npz", x=gray, y=y5)
    np.savez(tmp_path / "c.npz", x=rgb, y=y4)
    np.savez(tmp_path / "f.npz", x=flt, y=y3)
    x, y = data.load(f"npz:{tmp_path / 'g.npz'}")
    assert x.shape == (5, 1, 6, 7) and y.dtype == torch.int64
    assert torch.allclose(x[:, 0], torch.from_numpy(gray).float() / 255)
    x, y = data.load(f"npz:{tmp_path / 'c.npz'}")
    assert x.shape == (4, 3, 6, 7)
    # channel c of sample i equals the HWC array's [..., c] / 255
    assert torch.allclose(x[2, 1], torch.from_numpy(rgb[2, :, :, 1]).float() / 255)
    x, y = data.load(f"npz:{tmp_path / 'f.npz'}")
    assert torch.equal(x, torch.from_numpy(flt)) and y.tolist() == [1, 0, 1]
    ds = data.dataset(f"npz:{tmp_path / 'c.npz'}")
    xi, yi = ds[2]
    assert xi.shape == (3, 6, 7) and int(yi) == 2
    assert torch.allclose(xi, data.load(f"npz:{tmp_path / 'c.npz'}")[0][2])
    assert torch.equal(ds[-1][0], ds[3][0]) and len(ds) == 4
    with pytest.raises(IndexError):
        ds[4]


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.full((2, 1, 3, 3), 2.0, np.float32), y=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.load(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="'y'"):
        data.load(f"npz:{tmp_path / 'noy.npz'}")
    np.savez(tmp_path / "len.npz", x=np.zeros((2, 3, 3), np.uint8), y=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="2 labels"):
        data.load(f"npz:{tmp_path / 'len.npz'}")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        data.load(f"npz:{tmp_path / 'nothere.npz'}")


def test_missing_file_error_names_expected_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVSMOOTH_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as exc:
        data.load("mnist", split="test", root=tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "mnist_test.npz") in msg and "download" in msg
    monkeypatch.setenv("ADVSMOOTH_DATA", str(tmp_path / "envroot"))
    with pytest.raises(FileNotFoundError, match="envroot"):
        data.load("cifar10", split="test")


def test_root_from_env_and_argument(tmp_path, monkeypatch):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.savez_compressed(tmp_path / "mnist_test.npz", x=x, y=np.array([3, 4]))
    xa, ya = data.load("mnist", split="test", root=tmp_path)
    monkeypatch.setenv("ADVSMOOTH_DATA", str(tmp_path))
    xb, yb = data.load("mnist", split="test")
    assert torch.equal(xa, xb) and ya.tolist() == yb.tolist() == [3, 4]
    assert data.data_roots() == [tmp_path]


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        data.load("nope")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("digits", split="validation")


def test_subsets_seeded_and_prefix():
    x, y = data.load("digits", split="train")
    a = data.load("digits", split="train", sample=50, seed=3)
    b = data.load("digits", split="train", sample=50, seed=3)
    c = data.load("digits", split="train", sample=80, seed=3)
    d = data.load("digits", split="train", sample=50, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(c[1][:50], a[1]) and torch.equal(c[0][:50], a[0])
    assert not torch.equal(a[1], d[1])
    assert len(set(a[1].tolist())) > 3  # spread over classes
    first = data.load("digits", split="train", n=10)
    assert torch.equal(first[0], x[:10])
    idx = data.load("digits", split="train", indices=[5, 1])
    assert torch.equal(idx[0], x[[5, 1]])
    with pytest.raises(ValueError, match="at most one"):
        data.load("digits", n=3, sample=3)
    with pytest.raises(ValueError, match="exceeds"):
        data.load("digits", sample=10_000)


def test_first_n_of_class_sorted_data_warns():
    x = torch.rand(30, 1, 4, 4)
    y = torch.arange(3).repeat_interleave(10)
    with pytest.warns(UserWarning, match="sample=") as rec:
        xs, ys = data.subset(x, y, n=5)
    assert ys.tolist() == [0] * 5
    assert rec[0].filename == __file__  # the user's line, not the library's
    xs, ys = data.subset(x, y, sample=12, seed=0)
    assert len(set(ys.tolist())) > 1


def test_available_lists_registry():
    rows = {r["name"]: r for r in data.available()}
    assert {"digits", "mnist", "cifar10", "cifar100", "imagenet"} <= set(rows)
    assert rows["digits"]["available"] == {"train": True, "test": True}
    assert rows["cifar10"]["shape"] == (3, 32, 32)
    assert data.class_names("cifar10")[3] == "cat"
    assert data.class_names("digits") == [str(i) for i in range(10)]


@needs_shared("data/mnist_test.npz", "data/cifar10_test.npz")
def test_shared_mnist_and_cifar_layout():
    x, y = data.load("mnist", split="test", root=SHARED_DATA, n=10)
    assert x.shape == (10, 1, 28, 28) and y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    xc, yc = data.load("cifar10", split="test", root=SHARED_DATA, sample=200, seed=0)
    assert xc.shape == (200, 3, 32, 32) and 0 <= float(xc.min()) and float(xc.max()) <= 1
    assert len(set(yc.tolist())) == 10
    raw = np.load(SHARED_DATA / "cifar10_test.npz")
    i = 1234
    one, _ = data.load("cifar10", split="test", root=SHARED_DATA, indices=[i])
    assert torch.allclose(one[0], torch.from_numpy(raw["x"][i]).permute(2, 0, 1).float() / 255)
    ds = data.dataset("mnist", split="test", root=SHARED_DATA)
    assert len(ds) == 10000 and torch.equal(ds[3][0], x[3]) and int(ds[3][1]) == 0


def test_random_subset_is_the_one_seeded_picker():
    import torch

    from advsmooth import data

    a = data.random_subset(100, 10, 3)
    assert torch.equal(a, data.random_subset(100, 11, 3)[:10])  # prefixes agree
    rest = data.random_subset(100, None, 3, offset=10)
    assert len(rest) == 90 and not set(a.tolist()) & set(rest.tolist())  # disjoint ranges
    assert torch.equal(data.random_subset(100, 10, 3, sort=True), a.sort().values)
    assert not torch.equal(a, data.random_subset(100, 10, 4))
    # data.load(sample=k, seed=s) draws exactly this subset
    x_all, y_all = data.load("digits", "test")
    x, y = data.load("digits", "test", sample=12, seed=7)
    idx = data.random_subset(len(y_all), 12, 7)
    assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])
    with pytest.raises(ValueError, match="available"):
        data.random_subset(5, 6, 0)


# ----------------------------------------------------------------------------------------------
# a split stored in parts (the shared CIFAR-10 training split: cifar10_train_1.npz … _5.npz)
# ----------------------------------------------------------------------------------------------

def _write_parts(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, n in enumerate(sizes, start=1):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.int64)
        np.savez_compressed(folder / f"cifar10_train_{i}.npz", x=x, y=y)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def test_parts_are_read_in_order_and_concatenated(tmp_path):
    from advsmooth.data.registry import _read_parts

    x, y = _write_parts(tmp_path, [3, 4, 2])
    rx, ry = _read_parts(tmp_path / "cifar10_train_1.npz", 9)
    assert np.array_equal(rx, x) and np.array_equal(ry, y)
    # parts beyond the split's size are not read; a missing part is named
    rx, _ = _read_parts(tmp_path / "cifar10_train_1.npz", 7)
    assert len(rx) == 7
    (tmp_path / "cifar10_train_3.npz").unlink()
    with pytest.raises(ValueError, match="part is missing after cifar10_train_2.npz"):
        _read_parts(tmp_path / "cifar10_train_1.npz", 9)


@needs_shared("data/cifar10_train_1.npz", "data/cifar10_train_5.npz")
def test_shared_cifar10_train_split_loads_whole():
    ds = data.dataset("cifar10", "train")
    assert len(ds) == 50000
    x, y = data.load("cifar10", "train", sample=16, seed=0)
    assert x.shape == (16, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    first = np.load(SHARED_DATA / "cifar10_train_5.npz", allow_pickle=False)
    x_last, y_last = ds[49999]
    assert int(y_last) == int(first["y"][-1])
    assert torch.allclose(x_last, torch.from_numpy(first["x"][-1]).permute(2, 0, 1).float() / 255)
