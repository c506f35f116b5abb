"""R-CNN's second stage as the paper trains it: per-class linear SVMs on fc7 features with
hard-negative mining (§2.3), and class-specific ridge box regressors on pool5 features
(appendix C), fitted after the CNN has been fine-tuned.

For each class: the positives are the ground-truth boxes of the class, the negatives the
regions of IoU < 0.3 with every box of the class ("proposals with less than 0.3 IoU
overlap with all instances of a class are negatives for that class"; the regions in between
are ignored). There are far too many negatives to train on at once, so the paper mines
them ("standard hard negative mining method", Felzenszwalb et al.): one pass over the
images, adding each image's negatives that the current SVM scores above -1 (inside the
margin) to a cache, retraining whenever the cache has grown by `retrain_limit`, and
evicting the cached ones scored below -1.2. The settings are those of the authors' code
(rcnn/rcnn_train.m): C = 0.001, positive loss weight 2, bias feature 10, features scaled
to a mean norm of 20, the L1-loss (hinge) SVM that liblinear solves by dual coordinate
descent (Hsieh et al., 2008). Box regression (appendix C): proposals of IoU > 0.6 with
their best ground-truth box, targets the box coder's deltas, ridge with lambda 1000.

At test (`SVMSecondStage`, R-CNN's `roi_heads.box_svm`), a region's score for class c is
the SVM's margin, mapped through a sigmoid into [0, 1] (same ranking and per-class NMS as
the margin; the score threshold 0.05 keeps margins above -2.94), and its box is the ridge
regressor's. R-CNN appendix B: SVMs 54.2% mAP against the fine-tuned softmax's 50.9% on
VOC 2007.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from seglab.structures.boxes import box_iou


@dataclass(frozen=True)
class SVMSettings:
    """The authors' settings (rcnn_train.m, rcnn_train_bbox_regressor.m)."""

    svm_c: float = 1e-3
    positive_weight: float = 2.0
    bias_feature: float = 10.0
    negative_iou: float = 0.3  # below: a negative for the class
    hard_threshold: float = -1.0001  # scored above: a hard negative (in the margin)
    evict_threshold: float = -1.2  # cached negatives scored below are evicted
    retrain_limit: int = 2000  # new hard negatives between two trainings
    feature_norm: float = 20.0  # features scaled to this mean L2 norm
    regression_iou: float = 0.6  # appendix C: proposals "near" a ground-truth box
    ridge_lambda: float = 1000.0


class SVMSecondStage(nn.Module):
    """Linear SVMs on fc7 and ridge box regressors on pool5, one per class (buffers, saved
    with the model; column and rows of class 0, the background, stay zero).

    (K, C, S, S) pool5, (K, R) fc7 -> scores (K, num_classes) in [0, 1], deltas
    (K, num_classes*4) in the RoI heads' box coder's parameterisation.
    """

    def __init__(self, pool5_size: int, fc7_size: int, num_classes: int):
        super().__init__()
        self.register_buffer("svm_weight", torch.zeros(num_classes, fc7_size))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("ridge_weight", torch.zeros(num_classes * 4, pool5_size))
        self.register_buffer("ridge_bias", torch.zeros(num_classes * 4))
        self.register_buffer("feature_scale", torch.ones(2))  # fc7, pool5
        self.register_buffer("fitted_flag", torch.zeros((), dtype=torch.bool))
        self.fitted = False  # a Python bool: the RoI heads branch on it, export included
        self.register_load_state_dict_post_hook(_read_fitted_flag)

    def forward(self, pool5: Tensor, fc7: Tensor) -> tuple[Tensor, Tensor]:
        pool5 = pool5.flatten(start_dim=1) * self.feature_scale[1]  # (K, C, S, S) -> (K, CSS)
        margins = fc7 * self.feature_scale[0] @ self.svm_weight.T + self.svm_bias
        deltas = pool5 @ self.ridge_weight.T + self.ridge_bias  # (K, num_classes*4)
        return torch.sigmoid(margins), deltas

    def set_fitted(self) -> None:
        self.fitted_flag.fill_(True)
        self.fitted = True


def _read_fitted_flag(module: SVMSecondStage, incompatible_keys) -> None:
    module.fitted = bool(module.fitted_flag)


@dataclass
class RegionFeatures:
    """The training regions' features of a set of images, gathered once."""

    fc7: list[np.ndarray] = field(default_factory=list)  # per image (N_i, R)
    # per image (N_i, num_classes): IoU with the image's best box of each class (gt: 1)
    class_iou: list[np.ndarray] = field(default_factory=list)
    gt_labels: list[np.ndarray] = field(default_factory=list)  # per image (N_i,) 0: region
    pool5: list[np.ndarray] = field(default_factory=list)  # regression pairs (M, CSS)
    pool5_labels: list[np.ndarray] = field(default_factory=list)  # (M,) class of the gt
    pool5_targets: list[np.ndarray] = field(default_factory=list)  # (M, 4) encoded deltas


@torch.no_grad()
def gather_region_features(model: nn.Module, samples, num_classes: int) -> RegionFeatures:
    """fc7 of every ground-truth box and selective-search region of each (image, target)
    in `samples` (targets with `boxes`, `labels`, `proposals`), and pool5 with regression
    targets of the regions of IoU > 0.6 with a ground-truth box. Eval mode, no gradients."""
    heads, settings = model.roi_heads, SVMSettings()
    gathered = RegionFeatures()
    for image, target in samples:
        batch, (resized,) = model.transform([image], [target])
        features = model.backbone(batch.tensors)
        (proposals,), _ = model.proposal_generator(batch, features, [resized])
        gt_boxes, gt_labels = resized["boxes"].to(proposals), resized["labels"]
        regions = torch.cat([gt_boxes, proposals])  # (G + P, 4)
        pool5 = heads.box_roi_pool(features, [regions], batch.image_sizes)  # (N, C, S, S)
        gathered.fc7.append(heads.box_head(pool5).numpy())
        gathered.class_iou.append(_iou_per_class(regions, gt_boxes, gt_labels, num_classes))
        is_gt = torch.zeros(len(regions), dtype=torch.int64)
        is_gt[: len(gt_boxes)] = gt_labels
        gathered.gt_labels.append(is_gt.numpy())
        if len(gt_boxes):
            best_iou, best_gt = box_iou(gt_boxes, proposals).max(dim=0)  # (P,)
            near = torch.where(best_iou > settings.regression_iou)[0]
            targets = heads.box_coder.encode(gt_boxes[best_gt[near]], proposals[near])
            gathered.pool5.append(pool5[len(gt_boxes) :][near].flatten(1).numpy())
            gathered.pool5_labels.append(gt_labels[best_gt[near]].numpy())
            gathered.pool5_targets.append(targets.numpy())
    return gathered


def _iou_per_class(regions: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int):
    """(N, num_classes) best IoU of each region with the boxes of each class (0: none)."""
    iou = np.zeros((len(regions), num_classes), dtype=np.float32)
    for label in gt_labels.unique().tolist():
        of_class = gt_boxes[gt_labels == label]
        iou[:, label] = box_iou(of_class, regions).max(dim=0).values.numpy()
    return iou


def fit_rcnn_svms(
    model: nn.Module, samples, settings: SVMSettings | None = None
) -> dict[str, float]:
    """Fit R-CNN's SVMs and ridge regressors on `samples` and install them in the model's
    `roi_heads.box_svm` (a model built with `second_stage: svm`). Returns a summary:
    regions, positives and cached negatives per class, regression pairs."""
    settings = settings or SVMSettings()
    stage = model.roi_heads.box_svm
    if stage is None:
        raise ValueError("the model has no SVM stage: build R-CNN with second_stage='svm'")
    num_classes = stage.svm_weight.shape[0]
    model.eval()
    gathered = gather_region_features(model, samples, num_classes)
    fc7_scale = _scale_to_norm(np.concatenate(gathered.fc7), settings.feature_norm)
    summary = {"images": len(gathered.fc7), "regions": sum(len(f) for f in gathered.fc7)}
    for label in range(1, num_classes):
        svm = mine_and_train_svm(
            [fc7 * fc7_scale for fc7 in gathered.fc7],
            [labels == label for labels in gathered.gt_labels],
            [iou[:, label] < settings.negative_iou for iou in gathered.class_iou],
            settings,
        )  # fmt: skip
        stage.svm_weight[label] = torch.from_numpy(svm.weight).float()
        stage.svm_bias[label] = float(svm.bias)
        summary[f"class_{label}_positives"] = svm.positives
        summary[f"class_{label}_negatives_cached"] = svm.negatives
    pool5_scale = _fit_regressors(stage, gathered, settings)
    stage.feature_scale.copy_(torch.tensor([fc7_scale, pool5_scale]))
    stage.set_fitted()
    summary["regression_pairs"] = sum(len(labels) for labels in gathered.pool5_labels)
    return summary


def _scale_to_norm(features: np.ndarray, norm: float) -> float:
    """The factor that gives `features` (N, D) a mean L2 norm of `norm` (rcnn_train.m)."""
    mean_norm = float(np.linalg.norm(features, axis=1).mean()) if len(features) else 0.0
    return norm / mean_norm if mean_norm > 0 else 1.0


def _fit_regressors(stage: SVMSecondStage, gathered: RegionFeatures, settings) -> float:
    """Ridge regressors of each class into the stage; returns the pool5 feature scale."""
    if not gathered.pool5:
        return 1.0
    features = np.concatenate(gathered.pool5)
    labels = np.concatenate(gathered.pool5_labels)
    targets = np.concatenate(gathered.pool5_targets)
    scale = _scale_to_norm(features, settings.feature_norm)
    for label in np.unique(labels).tolist():
        weight, bias = fit_ridge(
            features[labels == label] * scale, targets[labels == label], settings.ridge_lambda
        )
        rows = slice(4 * label, 4 * label + 4)
        stage.ridge_weight[rows] = torch.from_numpy(weight.T).float()
        stage.ridge_bias[rows] = torch.from_numpy(bias).float()
    return scale


def fit_ridge(features: np.ndarray, targets: np.ndarray, lam: float):
    """Ridge regression W = argmin ||X W + b - Y||^2 + lam ||W||^2, the bias b not
    penalised (the features and targets are centred).

    Args:
        features: (M, D); targets: (M, T).

    Returns:
        weight (D, T) and bias (T,), float64.
    """
    features, targets = features.astype(np.float64), targets.astype(np.float64)
    feature_mean, target_mean = features.mean(axis=0), targets.mean(axis=0)
    centred = features - feature_mean
    gram = centred.T @ centred + lam * np.eye(features.shape[1])  # (D, D)
    weight = np.linalg.solve(gram, centred.T @ (targets - target_mean))
    return weight, target_mean - feature_mean @ weight


@dataclass
class LinearSVM:
    """A trained SVM: score(x) = x . weight + bias; the positives and cached negatives."""

    weight: np.ndarray  # (D,)
    bias: float
    positives: int = 0
    negatives: int = 0


def mine_and_train_svm(
    features: list[np.ndarray],
    positive: list[np.ndarray],
    negative: list[np.ndarray],
    settings: SVMSettings,
) -> LinearSVM:
    """One class's SVM with hard-negative mining over the images (rcnn_train.m).

    Args:
        features: per image (N_i, D), already scaled.
        positive, negative: per image (N_i,) bool masks of its positives and negatives.
    """
    positives = np.concatenate([f[p] for f, p in zip(features, positive, strict=True)])
    dim = positives.shape[1] if len(positives) else features[0].shape[1]
    svm = LinearSVM(np.zeros(dim), 0.0)
    cache, added = np.zeros((0, dim)), 0
    for image_features, image_negative in zip(features, negative, strict=True):
        candidates = image_features[image_negative]
        hard = candidates[candidates @ svm.weight + svm.bias > settings.hard_threshold]
        cache, added = np.concatenate([cache, hard]), added + len(hard)
        if added >= settings.retrain_limit:
            svm, cache = _retrain_and_evict(positives, cache, settings)
            added = 0
    svm, cache = _retrain_and_evict(positives, cache, settings)
    svm.positives, svm.negatives = len(positives), len(cache)
    return svm


def _retrain_and_evict(positives: np.ndarray, cache: np.ndarray, settings: SVMSettings):
    """Train on the positives and the cached negatives; drop the cached easy ones."""
    features = np.concatenate([positives, cache])
    labels = np.concatenate([np.ones(len(positives)), -np.ones(len(cache))])
    costs = np.where(labels > 0, settings.svm_c * settings.positive_weight, settings.svm_c)
    svm = train_linear_svm(features, labels, costs, bias_feature=settings.bias_feature)
    keep = cache @ svm.weight + svm.bias >= settings.evict_threshold
    return svm, cache[keep]


def train_linear_svm(
    features: np.ndarray,
    labels: np.ndarray,
    costs: np.ndarray,
    *,
    bias_feature: float = 10.0,
    tolerance: float = 0.1,
    max_epochs: int = 1000,
    seed: int = 0,
) -> LinearSVM:
    """L2-regularised L1-loss (hinge) SVM by dual coordinate descent (liblinear -s 3):
    min_w 1/2 |w|^2 + sum_i C_i max(0, 1 - y_i w.x_i), x_i with a constant feature
    `bias_feature` appended (liblinear -B, so the bias is regularised too).

    Args:
        features: (M, D); labels: (M,) +1 / -1; costs: (M,) C_i.
        tolerance: stop when the projected gradients span less than this (liblinear's
            default for its dual solvers, which the authors' code keeps).

    Returns:
        The SVM (its bias is the appended feature's weight times `bias_feature`).
    """
    if len(features) == 0 or (labels > 0).all() or (labels < 0).all():
        return LinearSVM(np.zeros(features.shape[1]), -1.0 if (labels < 0).any() else 0.0)
    x = np.hstack([features, np.full((len(features), 1), bias_feature)]).astype(np.float64)
    _, weight = dual_coordinate_descent(
        x, labels.astype(np.float64), costs, tolerance=tolerance, max_epochs=max_epochs, seed=seed
    )
    return LinearSVM(weight[:-1], float(weight[-1] * bias_feature))


def dual_coordinate_descent(
    x: np.ndarray,
    y: np.ndarray,
    costs: np.ndarray,
    *,
    tolerance: float,
    max_epochs: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Hsieh et al. (2008), Algorithm 1, on x (M, D), y (M,) +-1, C_i (M,): the dual
    variables alpha (M,) in [0, C_i] and w = sum_i alpha_i y_i x_i (D,)."""
    rng = np.random.default_rng(seed)
    alpha, weight = np.zeros(len(x)), np.zeros(x.shape[1])
    diagonal = np.einsum("ij,ij->i", x, x)  # Q_ii
    for _ in range(max_epochs):
        largest, smallest = -np.inf, np.inf
        for i in rng.permutation(len(x)):
            gradient = y[i] * (x[i] @ weight) - 1
            projected = _projected_gradient(gradient, alpha[i], costs[i])
            largest, smallest = max(largest, projected), min(smallest, projected)
            if projected != 0:
                old = alpha[i]
                alpha[i] = min(max(old - gradient / diagonal[i], 0.0), costs[i])
                weight += (alpha[i] - old) * y[i] * x[i]
        if largest - smallest < tolerance:
            break
    return alpha, weight


def _projected_gradient(gradient: float, alpha: float, cost: float) -> float:
    if alpha <= 0:
        return min(gradient, 0.0)
    if alpha >= cost:
        return max(gradient, 0.0)
    return gradient
