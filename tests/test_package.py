"""The package: one import name, public names that resolve, nothing heavy or generic imported on the way."""

import subprocess
import sys

import pytest

import xbar


@pytest.mark.parametrize("name", xbar.__all__)
def test_every_public_name_resolves(name):
    assert getattr(xbar, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'prepare_model'"):
        xbar.prepare_model


def test_importing_xbar_claims_no_generic_names_and_loads_no_torch(tmp_path):
    script = ("import sys, xbar; loaded = set(sys.modules); xbar.prepare; "
              "print(sorted(m for m in ('compiler', 'passes', 'models') if m in sys.modules), 'torch' in loaded)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "False"]
