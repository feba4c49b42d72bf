"""Model zoo of small digit classifiers and a byte-level language model used as compiler inputs."""

from .charlm import CharLM
from .data import DigitsSplit, load_digits_split
from .text import TextSplit, load_text_split
from .zoo import DIGIT_CLASSIFIERS, MLP, ZOO, LeNet, ResNet, TransformerClassifier, ZooEntry, load_pretrained

__all__ = [
    "MLP",
    "LeNet",
    "ResNet",
    "TransformerClassifier",
    "CharLM",
    "DIGIT_CLASSIFIERS",
    "ZOO",
    "ZooEntry",
    "load_pretrained",
    "load_digits_split",
    "DigitsSplit",
    "load_text_split",
    "TextSplit",
]
