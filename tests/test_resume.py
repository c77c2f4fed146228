"""The one resume rule shared by the training loops (TSFM, finetune, nnU-Net)."""

from __future__ import annotations

import pytest

from medfoundry.errors import InputError
from medfoundry.training.resume import resume_or_refuse


def test_resume_or_refuse(tmp_path):
    assert resume_or_refuse(tmp_path, [], resume=False) is False  # fresh folder: start
    assert resume_or_refuse(tmp_path, [], resume=True) is False  # nothing to continue: start
    assert resume_or_refuse(tmp_path, [tmp_path / "last.pt"], resume=True) is True
    assert resume_or_refuse(tmp_path, [tmp_path / "last.pt"], resume=False, overwrite=True) is False
    with pytest.raises(InputError, match=r"holds an earlier run \(last.pt, best.pt\); pass `resume`"):
        resume_or_refuse(tmp_path, [tmp_path / "last.pt", tmp_path / "best.pt"], resume=False)
    with pytest.raises(InputError, match="not both"):
        resume_or_refuse(tmp_path, [], resume=True, overwrite=True)
