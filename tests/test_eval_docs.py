"""The Python examples of docs/evaluation.md run as printed (no weights, no downloads)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_its_two_examples():
    blocks = _python_blocks()
    assert len(blocks) == 2
    assert "evaluate_video" in blocks[0] and "make_pair" in blocks[1]
    assert 'flow="raft"' not in DOC.read_text(encoding="utf-8")  # needs weights the reader may not have


def test_library_example_runs_and_scores_what_it_prints(capsys):
    namespace: dict = {}
    exec(compile(_python_blocks()[0], f"{DOC}:metrics example", "exec"), namespace)  # noqa: S102
    m, output, reference = namespace["m"], namespace["output"], namespace["reference"]
    from uav.eval import psnr

    assert m.psnr == pytest.approx(psnr(output, reference, crop_border=4))
    assert m.ewarp is not None and np.isfinite(m.ewarp) and set(m.to_dict()) >= {"psnr", "ewarp", "per_frame"}
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_degradation_example_runs():
    namespace: dict = {}
    exec(compile(_python_blocks()[1], f"{DOC}:degradation example", "exec"), namespace)  # noqa: S102
    assert namespace["lq"].shape == (4, 16, 16, 3) and namespace["hq"].shape == (4, 64, 64, 3)
