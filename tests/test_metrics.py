"""The shipped metrics: each against a direct computation, batching leaves the figure alone, shapes that do not
fit are refused, and the command line's names are the registry's."""

import math

import pytest
import torch
import torch.nn.functional as F

from xbar import accuracy
from xbar.compiler.cli import arguments as cli_arguments
from xbar.compiler.metrics import METRICS, as_metric, metric, score
from xbar.passes.errors import MetricError, UserError


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_the_command_lines_names_are_the_registrys_default_first():
    assert cli_arguments.METRIC_NAMES == tuple(METRICS)
    assert cli_arguments.METRIC_NAMES[0] == "accuracy"
    with pytest.raises(UserError, match="unknown metric 'bleu'; choose one of accuracy, next-token-accuracy"):
        metric("bleu")


def test_top1_accuracy_is_the_fraction_of_largest_logits_on_the_label_at_any_batch_size():
    logits, labels = torch.randn(101, 7, generator=generator()), torch.randint(0, 7, (101,), generator=generator(1))
    expected = sum(int(row.argmax()) == int(label) for row, label in zip(logits, labels)) / 101
    assert accuracy(identity, logits, labels) == expected
    assert accuracy(identity, logits, labels, batch_size=10) == expected
    assert score(identity, logits, labels, metric("accuracy"), 3) == expected


def test_language_model_metrics_are_per_token_over_every_batch():
    logits = torch.randn(9, 5, 11, generator=generator())
    targets = torch.randint(0, 11, (9, 5), generator=generator(1))
    nll = F.cross_entropy(logits.reshape(-1, 11).double(), targets.reshape(-1))
    for batch_size in (2, 9):
        assert score(identity, logits, targets, metric("perplexity"), batch_size) == pytest.approx(
            math.exp(nll.item()), rel=1e-12)
        assert score(identity, logits, targets, metric("next-token-accuracy"), batch_size) == (
            (logits.argmax(-1) == targets).sum().item() / targets.numel())


def test_a_perfect_language_model_has_perplexity_one_and_a_uniform_one_the_vocabulary():
    targets = torch.randint(0, 6, (4, 3), generator=generator())
    assert score(identity, F.one_hot(targets, 6).float() * 100, targets, metric("perplexity")) == pytest.approx(1.0)
    assert score(identity, torch.zeros(4, 3, 6), targets, metric("perplexity")) == pytest.approx(6.0)


def segmentation_batch(seed: int = 0):
    outputs = torch.randn(5, 4, 6, 7, generator=generator(seed))
    targets = torch.randint(0, 3, (5, 6, 7), generator=generator(seed + 1))  # class 3 is never labelled
    return outputs, targets


def test_pixel_accuracy_and_mean_iou_accumulate_over_batches():
    outputs, targets = segmentation_batch()
    predicted = outputs.argmax(1)
    ious = []
    for c in range(4):
        intersection = ((predicted == c) & (targets == c)).sum().item()
        union = ((predicted == c) | (targets == c)).sum().item()
        if union:
            ious.append(intersection / union)
    for batch_size in (2, 5):
        assert score(identity, outputs, targets, metric("pixel-accuracy"), batch_size) == (
            (predicted == targets).sum().item() / targets.numel())
        assert score(identity, outputs, targets, metric("mean-iou"), batch_size) == pytest.approx(
            sum(ious) / len(ious), rel=1e-12)


def test_mean_iou_is_not_the_mean_of_per_batch_means():
    outputs, targets = segmentation_batch(3)
    whole = score(identity, outputs, targets, metric("mean-iou"), 5)
    per_batch = [score(identity, outputs[i : i + 1], targets[i : i + 1], metric("mean-iou")) for i in range(5)]
    assert whole != pytest.approx(sum(per_batch) / 5, rel=1e-9)


def test_mean_squared_error():
    outputs, targets = torch.randn(10, 3, generator=generator()), torch.randn(10, 3, generator=generator(1))
    assert score(identity, outputs, targets, metric("mse"), 4) == pytest.approx(
        F.mse_loss(outputs.double(), targets.double()).item(), rel=1e-12)


def test_any_callable_returning_sum_and_count_is_a_metric():
    def mean_absolute_error(outputs, targets):
        return (outputs - targets).abs().sum(), torch.tensor(targets.numel())

    outputs, targets = torch.randn(10, generator=generator()), torch.randn(10, generator=generator(1))
    wrapped = as_metric(mean_absolute_error)
    assert wrapped.name == "mean_absolute_error" and not wrapped.percent
    assert score(identity, outputs, targets, mean_absolute_error, 3) == pytest.approx(
        (outputs - targets).abs().mean().item())


MISFITS = {
    "accuracy": (torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long), "takes outputs [batch, classes]"),
    "perplexity": (torch.zeros(2, 7), torch.zeros(2, dtype=torch.long), "[batch, sequence, vocabulary]"),
    "next-token-accuracy": (torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long), "got outputs of shape "
                            "[2, 5, 7] and targets of shape [2, 4]"),
    "pixel-accuracy": (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), "[batch, classes, H, W]"),
    "mean-iou": (torch.zeros(2, 3, 4, 4), torch.full((2, 4, 4), 3), "the targets run from 3 to 3, but the outputs "
                 "have 3 classes (0 to 2)"),
    "mse": (torch.zeros(2, 3), torch.zeros(2), "outputs and targets of the same shape"),
}


@pytest.mark.parametrize("name", sorted(MISFITS))
def test_outputs_or_targets_a_metric_cannot_score_are_one_clear_error(name):
    outputs, targets, message = MISFITS[name]
    with pytest.raises(MetricError) as error:
        score(identity, outputs, targets, metric(name))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, UserError)


def test_class_metrics_refuse_float_targets():
    with pytest.raises(MetricError, match="integer class indices"):
        score(identity, torch.zeros(2, 3), torch.zeros(2), metric("accuracy"))
