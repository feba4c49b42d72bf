"""Model zoo of small digit classifiers used as compiler inputs."""

from .data import DigitsSplit, load_digits_split
from .zoo import MLP, ZOO, LeNet, ResNet, TransformerClassifier, ZooEntry, load_pretrained

__all__ = [
    "MLP",
    "LeNet",
    "ResNet",
    "TransformerClassifier",
    "ZOO",
    "ZooEntry",
    "load_pretrained",
    "load_digits_split",
    "DigitsSplit",
]
