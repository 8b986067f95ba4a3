"""A rule script's expected failure is one line in its log, not a traceback (workflow/scripts/_job.py)."""

import importlib.util
from types import SimpleNamespace

import pytest

from conftest import REPO


def _job_module():
    spec = importlib.util.spec_from_file_location("_job", REPO / "workflow" / "scripts" / "_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_expected_error_is_one_line_in_the_log(ci_raw, tmp_path):
    log = tmp_path / "job.log"
    fake = SimpleNamespace(log=[str(log)], config=ci_raw)
    with pytest.raises(SystemExit) as exit_info:
        with _job_module().job(fake):
            raise ValueError("results/x.npz is not a pdm-bench reference-statistics file; delete it and recompute it")
    assert exit_info.value.code == 1
    assert log.read_text() == "error: results/x.npz is not a pdm-bench reference-statistics file; delete it and recompute it\n"


def test_unexpected_error_keeps_its_traceback(ci_raw, tmp_path):
    fake = SimpleNamespace(log=[str(tmp_path / "job.log")], config=ci_raw)
    with pytest.raises(KeyError):
        with _job_module().job(fake):
            raise KeyError("a bug")
