"""The report: failed runs stay in the tables with their reason; records that cannot share a table are refused."""

import json

import pandas as pd
import pytest

from pdm.report import ReportError, report


def record(method, seed, fid=50.0, **changes):
    base = {"experiment": "t", "method": method, "seed": seed, "status": "ok", "failure": None,
            "comparison_id": "c" * 16, "eval_id": f"{method}{seed}", "cpu_model": "test CPU",
            "fid": fid, "kid_mean": 0.05, "kid_std": 0.01, "clean_fid": fid + 1, "is_mean": None,
            "is_missing": "no IS weights", "parameters_sampling": 1000, "num_samples": 8, "num_real": 8,
            "extractor": "inception-v3-fid-2015-12-05", "extractor_tensors_sha256": "9" * 64,
            "train_seconds": 1.0, "device_hours": 0.001, "weights_bytes": 4096, "external_memory_bytes": 0,
            "metric_versions": {"torch": "x"}, "train_versions": {"torch": "x"}}
    return {**base, **changes}


def write(tmp_path, records):
    paths = []
    for i, r in enumerate(records):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(r))
        paths.append(path)
    return paths


def test_failed_run_is_in_the_tables_with_its_reason(tmp_path):
    failed = {k: v for k, v in record("pdm", 1).items() if k not in ("fid", "kid_mean", "clean_fid", "weights_bytes")}
    failed.update(status="failed", failure="pdm: loss_prototype became nan at step 7; training stopped there.")
    paths = write(tmp_path, [record("pdm", 0, fid=40.0), failed, record("ddpm", 0)])
    report(paths, tmp_path / "tables", tmp_path / "plots")
    main = pd.read_csv(tmp_path / "tables" / "main.csv", dtype={"seed": str})
    row = main[(main["method"] == "pdm") & (main["seed"] == "1")].iloc[0]
    assert row["status"] == "failed" and pd.isna(row["FID"])
    summary = main[(main["method"] == "pdm") & (main["seed"] == "1 seed (bootstrap)")]  # the failed seed is left out
    assert summary["FID"].iloc[0] == 40.0
    text = (tmp_path / "tables" / "main.md").read_text()
    assert "pdm seed 1 failed: pdm: loss_prototype became nan at step 7" in text and "CPU: test CPU" in text
    assert (tmp_path / "tables" / "results.csv").read_text().count("failed") >= 1


def test_two_records_for_one_run_are_refused_with_both_files(tmp_path):
    paths = write(tmp_path, [record("pdm", 0), record("pdm", 0, eval_id="other"), record("ddpm", 0)])
    with pytest.raises(ReportError, match="pdm seed 0 has 2 records") as err:
        report(paths, tmp_path / "tables", tmp_path / "plots")
    assert str(paths[0]) in str(err.value) and str(paths[1]) in str(err.value)
    assert not (tmp_path / "tables").exists()  # nothing half-written


def test_records_of_different_comparisons_are_refused(tmp_path):
    paths = write(tmp_path, [record("pdm", 0), record("ddpm", 0, comparison_id="d" * 16)])
    with pytest.raises(ReportError, match="cannot share a table") as err:
        report(paths, tmp_path / "tables", tmp_path / "plots")
    assert str(paths[1]) in str(err.value)


def test_efficiency_summary_rows_say_how_many_seeds(tmp_path):
    """A single seed has no spread: its summary row says '1 seed' and shows no '±'; two seeds give mean ± std."""
    paths = write(tmp_path, [record("pdm", 0), record("pdm", 1, train_seconds=3.0), record("ddpm", 0)])
    report(paths, tmp_path / "tables", tmp_path / "plots")
    lines = (tmp_path / "tables" / "efficiency.md").read_text().splitlines()
    pdm_summary = next(line for line in lines if line.startswith("| pdm") and "seeds)" in line)
    ddpm_summary = [line for line in lines if line.startswith("| ddpm")][-1]
    assert "mean ± std (2 seeds)" in pdm_summary and "2 ± 1.414" in pdm_summary  # train s: 1.0 and 3.0
    assert "1 seed" in ddpm_summary and "±" not in ddpm_summary


def test_efficiency_table_shows_steps_flops_and_seconds_of_every_run(tmp_path):
    budget = {"budget": "flops", "budget_value": 6e9, "train_seconds": 2.0, "stage1_seconds": 0.0}
    paths = write(tmp_path, [
        record("ddpm", 0, **budget, steps_done=7, steps_planned=7, flops_per_step=8 * 10**8, train_flops=56 * 10**8),
        record("pdm", 0, **budget, steps_done=6, steps_planned=6, flops_per_step=9 * 10**8, train_flops=54 * 10**8),
        record("ldm", 0, **budget, steps_done=9, steps_planned=9, flops_per_step=6 * 10**8, train_flops=54 * 10**8,
               stage1_flops=3 * 10**12)])
    report(paths, tmp_path / "tables", tmp_path / "plots")
    table = pd.read_csv(tmp_path / "tables" / "efficiency.csv", dtype={"seed": str}).set_index(["method", "seed"])
    assert table.loc[("pdm", "0"), "steps"] == 6 and table.loc[("ddpm", "0"), "steps"] == 7
    assert table.loc[("pdm", "0"), "GFLOP/step"] == 0.9 and table.loc[("pdm", "0"), "train TFLOP"] == 0.0054
    assert table.loc[("ldm", "0"), "stage-1 TFLOP"] == 3 and pd.isna(table.loc[("pdm", "0"), "stage-1 TFLOP"])
    assert table.loc[("pdm", "0"), "train s"] == 2.0
    text = (tmp_path / "tables" / "efficiency.md").read_text()
    assert "Budget (flops), the same for every method: 6e+09 training FLOPs per run" in text
    main = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert not {"steps", "train s", "train TFLOP"} & set(main.columns)  # the main table stays free of costs


def test_clean_fid_turned_off_leaves_its_column_out_and_says_so(tmp_path):
    paths = write(tmp_path, [record("pdm", 0, clean_fid=None), record("ddpm", 0, clean_fid=None)])
    report(paths, tmp_path / "tables", tmp_path / "plots")
    main = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert "clean-FID" not in main.columns and main["FID"].notna().all()
    assert "clean-FID off (eval.clean_fid: false)" in (tmp_path / "tables" / "main.md").read_text()
