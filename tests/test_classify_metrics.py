"""Classification metrics on a hand-computed case, threshold choice, linear head and CNN baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfoundry.evaluation.classification import (
    binary_metrics,
    comparison_markdown,
    plot_confusions,
    plot_curves,
    write_comparison_csv,
)
from medfoundry.modeling.heads import LinearHead, predict_proba
from medfoundry.modeling.slice_cnn import SliceCNN
from medfoundry.training.cnn_baseline import CNNConfig, cnn_probabilities, train_cnn
from medfoundry.training.heads import HeadConfig, choose_threshold, imbalance_setup, train_linear_head

Y = [1, 1, 0, 0, 0, 1]
P = [0.9, 0.4, 0.35, 0.8, 0.1, 0.7]


def test_metrics_on_a_hand_computed_case():
    m = binary_metrics(Y, P, threshold=0.5)
    # predictions at 0.5: [1, 0, 0, 1, 0, 1] -> TP 2, FN 1, FP 1, TN 2
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # ROC-AUC: positive/negative pairs ranked correctly: 0.9 > 3, 0.4 > 2, 0.7 > 2 of 9 pairs
    assert m["roc_auc"] == pytest.approx(7 / 9)
    # AP: ranking 1,0,1,1,0,0 -> precision at each positive 1, 2/3, 3/4
    assert m["ap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    high = binary_metrics(Y, P, threshold=0.85)  # only 0.9 called positive
    assert (high["tp"], high["fp"], high["precision"], high["recall"]) == (1, 0, 1.0, pytest.approx(1 / 3))


def test_undefined_metrics_are_nan_not_errors():
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.9], threshold=0.95)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["ap"]) and math.isnan(m["precision"])
    assert m["specificity"] == 1.0


def test_threshold_choice():
    # F1 at candidate thresholds: 0.9 -> 0.5, 0.8 -> 0.4, 0.7 -> 0.667, 0.4 -> 0.857, 0.35 -> 0.75, 0.1 -> 0.667
    assert choose_threshold(np.array(Y), np.array(P), "f1") == pytest.approx(0.4)
    # Youden J = TPR - FPR is largest (2/3) at 0.4 (TPR 1, FPR 1/3)
    assert choose_threshold(np.array(Y), np.array(P), "youden") == pytest.approx(0.4)
    assert choose_threshold(np.array([1, 1]), np.array([0.2, 0.3])) == 0.5


def test_imbalance_options():
    labels = np.array([1] * 10 + [0] * 90)
    pos_weight, sampler = imbalance_setup(labels, "pos_weight", 0)
    assert sampler is None and float(pos_weight) == pytest.approx(9.0)
    pos_weight, sampler = imbalance_setup(labels, "balanced", 0)
    drawn = labels[list(sampler)]
    assert pos_weight is None and 0.4 < drawn.mean() < 0.6  # balanced on average, from 10 % positives


def test_linear_head_learns_a_separable_imbalanced_problem():
    rng = np.random.default_rng(0)
    n, d = 400, 32
    y = (rng.random(n) < 0.2).astype(int)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 0] += 3.0 * y  # one informative direction
    x = x * 5 + 10  # badly scaled on purpose: the head standardises
    for imbalance in ("pos_weight", "balanced"):
        cfg = HeadConfig(epochs=100, lr=1e-2, imbalance=imbalance, patience=30)
        trained = train_linear_head(x[:300], y[:300], x[300:350], y[300:350], cfg)
        prob = predict_proba(trained.model, x[350:])
        assert binary_metrics(y[350:], prob, trained.threshold)["roc_auc"] > 0.95
        assert 0.0 < trained.threshold < 1.0
    head = trained.model
    assert isinstance(head, LinearHead) and sum(p.numel() for p in head.parameters()) == d + 1


def test_cnn_architecture_and_training_on_bright_blobs():
    model = SliceCNN(32)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)]
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert len(convs) == len(norms) == len(pools) == 3 and len(linears) == 3
    assert model(torch.rand(5, 32, 32)).shape == (5,)
    rng = np.random.default_rng(1)
    n = 160
    y = (rng.random(n) < 0.3).astype(int)
    x = rng.uniform(0, 0.3, size=(n, 32, 32)).astype(np.float32)
    for i in np.flatnonzero(y):
        r, c = rng.integers(4, 26, size=2)
        x[i, r : r + 4, c : c + 4] = 1.0
    cfg = CNNConfig(epochs=6, batch_size=16, channels=(4, 8, 8), patience=6)
    trained = train_cnn(x[:110], y[:110], x[110:130], y[110:130], cfg, progress=False)
    prob = cnn_probabilities(trained.model, x[130:])
    assert binary_metrics(y[130:], prob, trained.threshold)["roc_auc"] > 0.9
    assert trained.seconds > 0


def test_table_and_plots(tmp_path):
    rows = {"a + linear": binary_metrics(Y, P, 0.5), "baseline CNN": binary_metrics(Y, [0.5] * 6, 0.5)}
    md = comparison_markdown(rows)
    assert md.splitlines()[0].startswith("| model | accuracy | precision | recall | specificity | f1 | roc_auc | ap")
    assert "| a + linear | 0.667 | 0.667 | 0.667 | 0.667 | 0.667 | 0.778 | 0.806 |" in md
    write_comparison_csv(rows, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[1].startswith("a + linear,0.66666")
    curves = {k: (np.array(Y), np.array(P)) for k in rows}
    plot_curves(curves, tmp_path / "roc.png", "roc")
    plot_curves(curves, tmp_path / "pr.png", "pr")
    plot_confusions(rows, tmp_path / "cm.png")
    for name in ("roc.png", "pr.png", "cm.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_flagged_ranges_are_runs_in_original_slices():
    from medfoundry.inference.slice_classifier import flagged_ranges

    flags = np.array([0, 1, 1, 0, 1], bool)
    z = np.array([0.0, 5.0, 10.0, 15.0, 20.0])
    prob = np.array([0.1, 0.7, 0.9, 0.2, 0.6])
    extent = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    ranges = flagged_ranges(flags, z, prob, extent)
    assert [(r["first_slice"], r["last_slice"], r["grid_slices"]) for r in ranges] == [(2, 5, [1, 2]), (8, 9, [4, 4])]
    assert [r["max_probability"] for r in ranges] == [0.9, 0.6] and ranges[0]["z_to_mm"] == 10.0


def test_a_head_kept_at_its_first_epoch_ranks_in_the_direction_of_the_data():
    """When the validation set cannot tell epochs apart (its labels are noise), early stopping keeps the first
    epoch; that head must rank new data the right way for every seed (it starts at zero, not at random weights)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(np.float32)
    x = rng.normal(size=(400, 3)).astype(np.float32) + y[:, None] * np.array([1.0, 0.8, 0.6], np.float32)
    y_val = (rng.random(60) < 0.5).astype(np.float32)  # uninformative validation labels
    x_val = rng.normal(size=(60, 3)).astype(np.float32)
    assert (LinearHead(3).linear.weight == 0).all()
    for seed in range(6):
        cfg = HeadConfig(epochs=30, patience=1, lr=1e-3, seed=seed, imbalance="weights")
        trained = train_linear_head(x[:300], y[:300], x_val, y_val, cfg, np.ones(300, np.float32))
        assert roc_auc_score(y[300:], predict_proba(trained.model, x[300:])) > 0.8, seed
