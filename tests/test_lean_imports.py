"""Lightning's import inside `scipy_signal_deferred` skips scipy.signal, and the real module
imports normally afterwards. Each case is read from a new interpreter (pytest's own process
has imported everything already): the deferred import from the session's import probe
(tests/conftest.py IMPORT_PROBE, which imports Lightning the way train.py does), the other
two cases from one interpreter of this module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Lightning imported as is, then the deferral entered with the real module already there
PLAIN = """
import json, sys
import torchmetrics, lightning                 # noqa
with_lightning = "scipy.signal" in sys.modules
real = sys.modules.get("scipy.signal")
from autotimm.startup import scipy_signal_deferred
with scipy_signal_deferred():
    import lightning.pytorch                   # noqa
    inside = sys.modules.get("scipy.signal") is real
print(json.dumps({"imported_with_lightning": with_lightning, "inside": inside,
                  "same": sys.modules.get("scipy.signal") is real}))
"""


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plain() -> dict:
    return _run(PLAIN)


def test_lightning_without_scipy_signal_then_the_real_module(import_probe, plain):
    assert import_probe["lightning"] == {
        "imported_with_lightning": False,
        "real_module": True,
        "window": [0.08, 1.0, 0.08],
    }
    # without the context torchmetrics imports it (what the deferral saves)
    assert plain["imported_with_lightning"] is True


def test_nothing_changes_when_scipy_signal_is_already_imported(plain):
    assert plain["inside"] is True and plain["same"] is True


def test_the_stand_in_hamming_is_scipys():
    from autotimm.startup import _hamming

    assert [round(float(x), 4) for x in _hamming(3)] == [0.08, 1.0, 0.08]
