"""The shipped metrics, by task: classification, language modelling, segmentation, regression.

Each measures one batch as ``(sum, count)`` (see :mod:`.base`); sums of counts are int64, so
accuracies are exact ratios of integers, and sums of losses float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Metric, Totals, check_classes, check_shapes, exp_ratio

CLASSIFIER = "outputs [batch, classes] and targets [batch] of class indices"
LANGUAGE_MODEL = "outputs [batch, sequence, vocabulary] and targets [batch, sequence] of token ids"
SEGMENTATION = "outputs [batch, classes, H, W] and targets [batch, H, W] of class indices"


def _count(tensor: Tensor) -> Tensor:
    return torch.tensor(tensor.numel())


def _classifier(name: str, outputs: Tensor, targets: Tensor) -> None:
    fits = outputs.dim() == 2 and targets.dim() == 1 and len(outputs) == len(targets)
    check_shapes(name, CLASSIFIER, fits, outputs, targets)
    check_classes(name, targets, outputs.shape[1])


def _language_model(name: str, outputs: Tensor, targets: Tensor) -> None:
    check_shapes(name, LANGUAGE_MODEL, outputs.dim() == 3 and outputs.shape[:2] == targets.shape, outputs, targets)
    check_classes(name, targets, outputs.shape[2])


def _segmentation(name: str, outputs: Tensor, targets: Tensor) -> None:
    fits = (outputs.dim() >= 3 and targets.dim() == outputs.dim() - 1 and len(outputs) == len(targets)
            and outputs.shape[2:] == targets.shape[1:])
    check_shapes(name, SEGMENTATION, fits, outputs, targets)
    check_classes(name, targets, outputs.shape[1])


def top1_correct(outputs: Tensor, targets: Tensor) -> Totals:
    """Samples whose largest logit is their label, of all samples."""
    _classifier("accuracy", outputs, targets)
    return (outputs.argmax(dim=1) == targets).sum(), _count(targets)


def next_token_correct(outputs: Tensor, targets: Tensor) -> Totals:
    """Positions whose largest logit is the next token, of all positions."""
    _language_model("next-token-accuracy", outputs, targets)
    return (outputs.argmax(dim=2) == targets).sum(), _count(targets)


def token_nll(outputs: Tensor, targets: Tensor) -> Totals:
    """Summed negative log-likelihood of the next tokens (natural log), and the token count."""
    _language_model("perplexity", outputs, targets)
    nll = F.cross_entropy(outputs.flatten(0, 1).double(), targets.flatten(), reduction="sum")
    return nll, _count(targets)


def pixel_correct(outputs: Tensor, targets: Tensor) -> Totals:
    """Pixels whose largest class score is their label, of all pixels."""
    _segmentation("pixel-accuracy", outputs, targets)
    return (outputs.argmax(dim=1) == targets).sum(), _count(targets)


def class_overlaps(outputs: Tensor, targets: Tensor) -> Totals:
    """Per class: pixels both predicted and labelled that class (intersection), and pixels either
    predicted or labelled it (union)."""
    _segmentation("mean-iou", outputs, targets)
    classes, predicted, targets = outputs.shape[1], outputs.argmax(dim=1).flatten(), targets.flatten()
    intersection = torch.bincount(targets[predicted == targets], minlength=classes)
    union = torch.bincount(predicted, minlength=classes) + torch.bincount(targets, minlength=classes) - intersection
    return intersection, union


def mean_iou(intersection: Tensor, union: Tensor) -> float:
    """The mean over classes of intersection / union, over the classes that occur (predicted or labelled)."""
    present = union > 0
    return (intersection[present].double() / union[present]).mean().item()


def squared_error(outputs: Tensor, targets: Tensor) -> Totals:
    """Summed squared difference of outputs and targets, and the number of values."""
    check_shapes("mse", "outputs and targets of the same shape", outputs.shape == targets.shape, outputs, targets)
    return (outputs.double() - targets.double()).square().sum(), _count(targets)


TOP1_ACCURACY = Metric("accuracy", top1_correct, plural="accuracies")
"""Top-1 accuracy of a classifier: the default metric everywhere."""
NEXT_TOKEN_ACCURACY = Metric("next-token-accuracy", next_token_correct, plural="next_token_accuracies")
PERPLEXITY = Metric("perplexity", token_nll, exp_ratio, percent=False,
                    plural="perplexities")
"""Per-token perplexity: exp(total negative log-likelihood / tokens)."""
PIXEL_ACCURACY = Metric("pixel-accuracy", pixel_correct, plural="pixel_accuracies")
MEAN_IOU = Metric("mean-iou", class_overlaps, mean_iou, plural="mean_ious")
"""Mean intersection over union: intersections and unions accumulate per class over every batch,
then the per-class ratios are averaged (classes that never occur are left out)."""
MEAN_SQUARED_ERROR = Metric("mse", squared_error, percent=False, plural="mses")
