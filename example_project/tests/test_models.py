"""Ordinary tests of the example models, plus one budget check from a test."""

import torch
from example_project.models import MnistCNN, TextClassifier

from pytest_netbudget import budget


def test_cnn_outputs_one_score_per_class():
    assert MnistCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_classifier_outputs_one_score_per_class():
    assert TextClassifier()(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 4)


@budget(max_params="30k", max_macs="3M")
def test_cnn_for_100_classes_fits_the_phone_budget(netbudget):
    """A variant built in the test: the marker's limits, the fixture's check."""
    netbudget.check(MnistCNN(num_classes=100), input_shape=(1, 1, 28, 28), max_params="200k")
