"""R-CNN's paper second stage (§2.3, appendix C): the hinge-loss SVM solver, hard-negative
mining, ridge box regression, and the fitted stage scoring the detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seglab
from seglab.models.detection.rcnn_svm import (
    SVMSettings,
    dual_coordinate_descent,
    fit_rcnn_svms,
    fit_ridge,
    mine_and_train_svm,
)


def test_dual_coordinate_descent_reaches_the_hinge_loss_optimum():
    """The primal 1/2|w|^2 + sum C_i max(0, 1 - y_i w.x_i) and the dual sum alpha -
    1/2|w(alpha)|^2 meet at the optimum (strong duality): their gap bounds the error."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=300) > 0, 1.0, -1.0)  # overlapping classes
    costs = np.where(y > 0, 2.0, 1.0) * 0.1
    alpha, weight = dual_coordinate_descent(x, y, costs, tolerance=1e-8, max_epochs=5000, seed=0)
    primal = 0.5 * weight @ weight + costs @ np.maximum(0, 1 - y * (x @ weight))
    dual = alpha.sum() - 0.5 * weight @ weight
    assert np.all((alpha >= 0) & (alpha <= costs))
    np.testing.assert_allclose(weight, (alpha * y) @ x)
    assert 0 <= primal - dual < 1e-6 * primal
    assert np.mean(np.sign(x @ weight) == y) > 0.8


def test_hard_negative_mining_brings_the_hard_negatives_into_the_cache():
    """Easy negatives come first, the hard ones (near the positives) in the last image: an
    SVM of the first cache alone scores them positive; mining adds them and the final SVM
    rejects them; the cache keeps only negatives near the margin."""
    rng = np.random.default_rng(0)
    positives = np.column_stack([rng.uniform(2, 4, 40), rng.normal(size=40)])
    easy = [np.column_stack([rng.uniform(-4, -2, 500), rng.normal(size=500)]) for _ in range(6)]
    hard = np.column_stack([rng.uniform(0.5, 1.0, 10), rng.normal(size=10)])
    images = [np.concatenate([positives, easy[0]]), *easy[1:], hard]
    positive = [np.arange(len(images[0])) < 40] + [np.zeros(len(i), bool) for i in images[1:]]
    negative = [~p for p in positive]
    settings = SVMSettings(svm_c=1.0, bias_feature=1.0, retrain_limit=1000)
    svm = mine_and_train_svm(images, positive, negative, settings)
    assert np.all(hard @ svm.weight + svm.bias < 0)
    assert np.all(positives @ svm.weight + svm.bias > 0)
    assert svm.negatives < 1000  # the easy ones evicted
    first_cache_only = mine_and_train_svm(images[:2], positive[:2], negative[:2], settings)
    assert np.all(hard @ first_cache_only.weight + first_cache_only.bias > 0)


def test_ridge_solves_the_normal_equations_with_an_unpenalised_bias():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 5)) + 3.0
    true_weight, true_bias = rng.normal(size=(5, 4)), rng.normal(size=4)
    targets = features @ true_weight + true_bias
    weight, bias = fit_ridge(features, targets, 1e-9)
    np.testing.assert_allclose(weight, true_weight, atol=1e-6)
    np.testing.assert_allclose(bias, true_bias, atol=1e-6)
    weight, bias = fit_ridge(features, targets, 1000.0)
    centred = features - features.mean(axis=0)
    lhs = (centred.T @ centred + 1000.0 * np.eye(5)) @ weight
    np.testing.assert_allclose(lhs, centred.T @ (targets - targets.mean(axis=0)), atol=1e-8)
    np.testing.assert_allclose(bias, targets.mean(axis=0) - features.mean(axis=0) @ weight)


def tiny_rcnn(**options):
    torch.manual_seed(0)
    return seglab.build_model(
        "rcnn", num_classes=3, backbone="resnet18", norm="bn", min_size=96, max_size=96,
        warp_size=32, context_padding=2, box_roi_size=2, representation_size=32, **options,
    )  # fmt: skip


def scenes(count: int = 6):
    """Images with one rectangle of class 1 or 2 and six regions around and away from it."""
    samples = []
    for index in range(count):
        image = torch.full((3, 96, 96), 0.2)
        image[:, 20:50, 30:70] = torch.tensor([0.9, 0.5, 0.1])[:, None, None] * (index % 2 + 1) / 2
        regions = torch.tensor([[30.0, 20, 70, 50], [28, 18, 72, 52], [0, 0, 20, 20],
                                [60, 60, 95, 95], [35, 25, 65, 45], [10, 50, 40, 90]])  # fmt: skip
        label = torch.tensor([1 + index % 2])
        target = {"boxes": torch.tensor([[30.0, 20, 70, 50]]), "labels": label,
                  "proposals": regions}  # fmt: skip
        samples.append((image, target))
    return samples


def test_the_fitted_stage_scores_and_regresses_the_detections():
    """Before fitting, the test outputs are the softmax's; after, the SVMs' sigmoid margins
    on fc7 and the ridge deltas on pool5 of each object class; a saved model keeps them."""
    model = tiny_rcnn(second_stage="svm").eval()
    heads = model.roi_heads
    image, target = scenes(1)[0]
    batch, (resized,) = model.transform([image], [target])
    features = model.backbone(batch.tensors)
    (regions,), _ = model.proposal_generator(batch, features, [resized])
    with torch.no_grad():
        pool5 = heads.box_roi_pool(features, [regions], batch.image_sizes)
        fc7 = heads.box_head(pool5)
        before, _ = heads._test_outputs(features, [regions], batch.image_sizes)
        torch.testing.assert_close(before, heads.box_predictor(fc7)[0].softmax(dim=-1))
        summary = fit_rcnn_svms(model, scenes())
        scores, deltas = heads._test_outputs(features, [regions], batch.image_sizes)
    stage = heads.box_svm
    margins = fc7 * stage.feature_scale[0] @ stage.svm_weight.T + stage.svm_bias
    torch.testing.assert_close(scores, torch.sigmoid(margins))
    ridge = pool5.flatten(1) * stage.feature_scale[1] @ stage.ridge_weight.T + stage.ridge_bias
    torch.testing.assert_close(deltas, ridge)
    assert summary["images"] == 6 and summary["regression_pairs"] > 0
    assert stage.ridge_weight[4:].abs().sum() > 0 and stage.ridge_weight[:4].abs().sum() == 0
    assert torch.all(stage.svm_weight[1:].abs().sum(dim=1) > 0)  # class 0: no SVM
    assert stage.svm_weight[0].abs().sum() == 0
    reloaded = tiny_rcnn(second_stage="svm")
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.roi_heads.box_svm.fitted


def test_only_a_model_built_with_the_svm_stage_fits_it():
    with pytest.raises(ValueError, match="second_stage"):
        fit_rcnn_svms(tiny_rcnn(), scenes(1))
