"""Lightning's import inside `scipy_signal_deferred` skips scipy.signal, and the real module
imports normally afterwards. Each case runs in a new interpreter (pytest's own process has
imported everything already)."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys
{before}
import torchmetrics, lightning                 # noqa
during = "scipy.signal" in sys.modules
import scipy.signal                            # what a later user of scipy gets
print(json.dumps({{
    "imported_with_lightning": during,
    "real_module": hasattr(scipy.signal, "windows") and hasattr(scipy.signal, "convolve"),
    "window": [round(float(x), 4) for x in scipy.signal.windows.hamming(3)],
}}))
"""


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_lightning_without_scipy_signal_then_the_real_module():
    deferred = _run(
        CHECK.replace(
            "import torchmetrics, lightning",
            "from autotimm.startup import scipy_signal_deferred\n"
            "with scipy_signal_deferred():\n    import torchmetrics, lightning",
        ).format(before="")
    )
    assert deferred == {
        "imported_with_lightning": False,
        "real_module": True,
        "window": [0.08, 1.0, 0.08],
    }
    # without the context torchmetrics imports it (what the deferral saves)
    assert _run(CHECK.format(before=""))["imported_with_lightning"] is True


def test_nothing_changes_when_scipy_signal_is_already_imported():
    code = (
        "import sys, scipy.signal\nreal = sys.modules['scipy.signal']\n"
        "from autotimm.startup import scipy_signal_deferred\n"
        "with scipy_signal_deferred():\n    import lightning\n"
        "import json; print(json.dumps({'same': sys.modules['scipy.signal'] is real}))"
    )
    assert _run(code) == {"same": True}


def test_the_stand_in_hamming_is_scipys():
    from autotimm.startup import _hamming

    assert [round(float(x), 4) for x in _hamming(3)] == [0.08, 1.0, 0.08]
