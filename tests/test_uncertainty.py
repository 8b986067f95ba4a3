"""Intervals (issue 7): bootstrap within a run, paired bootstrap between methods, Student t across seeds."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pdm.config import ConfigError, resolve_config
from pdm.identity import all_identities
from pdm.metrics.scores import bootstrap_indices, bootstrap_scores, frechet_distance_from_features
from pdm.report import main_table, report
from pdm.uncertainty import excludes_zero, paired_differences, percentile_interval, t_interval

from test_report import record, write


def features(n, dim=16, shift=0.0, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)) + shift


def scored(method, seed, feats, ref, replicates=40):
    """A record as evaluate_step writes it, from features (FID, KID and their bootstrap replicates)."""
    fids, kids = bootstrap_scores(feats, ref, replicates)
    fid = frechet_distance_from_features(feats, ref, "torch-fidelity")[0]
    return record(method, seed, fid=fid, fid_bootstrap=fids, kid_bootstrap=kids, bootstrap_samples=replicates)


def test_replicates_are_fixed_and_identical_for_identical_features():
    assert np.array_equal(bootstrap_indices(10, 3), bootstrap_indices(10, 3))  # no hidden state: replicate b is b
    ref, feats = features(30, seed=1), features(20)
    a, b = bootstrap_scores(feats, ref, 25), bootstrap_scores(feats.copy(), ref, 25)
    assert a == b and len(a[0]) == len(a[1]) == 25
    assert bootstrap_scores(feats, ref, 10)[0] == a[0][:10]  # more replicates extend, never reshuffle
    frame = pd.DataFrame([scored("ddpm", 0, feats, ref), scored("pdm", 0, feats.copy(), ref)])
    table, label = main_table(frame, "ddpm", 0.95)
    row = table[(table["method"] == "pdm") & (table["seed"] == "0")].iloc[0]
    assert label == "ΔFID vs ddpm"
    assert (row[label], row[f"{label} low"], row[f"{label} high"]) == (0.0, 0.0, 0.0)
    assert row["excludes 0"] == "no"


def test_a_shifted_feature_set_gives_a_positive_difference_that_excludes_zero():
    ref, feats = features(40, seed=1), features(30, seed=2)
    frame = pd.DataFrame([scored("ddpm", 0, feats, ref), scored("pdm", 0, feats + 1.0, ref)])
    table, label = main_table(frame, "ddpm", 0.95)
    row = table[(table["method"] == "pdm") & (table["seed"] == "0")].iloc[0]
    assert row[label] > 0 and 0 < row[f"{label} low"] <= row[label] <= row[f"{label} high"]
    assert row["excludes 0"] == "yes"
    reference = table[(table["method"] == "ddpm") & (table["seed"] == "0")].iloc[0]
    assert pd.isna(reference[label]) and pd.isna(reference["excludes 0"])  # "–" in the Markdown


def test_percentile_interval_on_a_known_array():
    values = np.arange(101.0)  # quantiles of 0..100 are their own percentages
    assert percentile_interval(values, 0.90) == pytest.approx((5.0, 95.0))
    assert percentile_interval(values, 0.95) == pytest.approx((2.5, 97.5))
    # bias-corrected: re-centred on the estimate (mean 50 -> 10), same spread
    assert percentile_interval(values, 0.90, estimate=10.0) == pytest.approx((-35.0, 55.0))
    assert np.isnan(percentile_interval([], 0.95)).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile_interval(values, 95)
    with pytest.raises(ValueError, match="eval.bootstrap_samples"):
        paired_differences([1.0, 2.0], [1.0])


def test_t_interval_matches_scipy():
    seeds = [74.05, 81.63, 78.2]
    mean, low, high = t_interval(seeds, 0.95)
    expected = stats.t.interval(0.95, df=2, loc=np.mean(seeds), scale=stats.sem(seeds))
    assert mean == pytest.approx(np.mean(seeds)) and (low, high) == pytest.approx(expected)
    assert (low, high) == pytest.approx((68.531, 87.389), abs=1e-3)  # by hand: 77.96 ± 4.303 · 3.796 / sqrt(3)
    assert np.isnan(t_interval([5.0], 0.95)[1:]).all()  # one seed: no spread across seeds
    assert excludes_zero(low, high) == "yes" and excludes_zero(-1.0, 2.0) == "no"


def test_single_seed_report_shows_its_bootstrap_interval_and_no_plus_minus(tmp_path):
    ref = features(40, seed=1)
    records = [scored("pdm", 0, features(30, seed=2), ref), scored("ddpm", 0, features(30, seed=3), ref)]
    report(write(tmp_path, records), tmp_path / "tables", tmp_path / "plots", reference_method="ddpm")
    text = (tmp_path / "tables" / "main.md").read_text()
    assert "±" not in text and "1 seed (bootstrap)" in text and "percentile bootstrap" in text
    fid = records[0]["fid"]
    low, high = percentile_interval(records[0]["fid_bootstrap"], 0.95, estimate=fid)
    assert f"[{low:.4g}, {high:.4g}]" in text
    main = pd.read_csv(tmp_path / "tables" / "main.csv", dtype={"seed": str})
    assert {"FID low", "FID high", "KID low", "KID high", "ΔFID vs ddpm", "excludes 0"} <= set(main.columns)
    assert "fid_bootstrap" not in (tmp_path / "tables" / "results.csv").read_text().splitlines()[0]


def test_several_seeds_give_a_t_interval_and_failed_seeds_stay_out(tmp_path):
    ref = features(40, seed=1)
    records = [scored("ddpm", s, features(30, seed=10 + s), ref) for s in range(3)]
    records += [scored("pdm", s, features(30, seed=20 + s) + 0.5, ref) for s in range(2)]
    records.append({**record("pdm", 2), "status": "failed", "failure": "nan at step 3", "fid": None, "kid_mean": None})
    report(write(tmp_path, records), tmp_path / "tables", tmp_path / "plots")
    main = pd.read_csv(tmp_path / "tables" / "main.csv", dtype={"seed": str})
    pdm = main[(main["method"] == "pdm") & (main["seed"] == "mean (2 seeds)")].iloc[0]
    fids = [r["fid"] for r in records[3:5]]
    assert (pdm["FID"], pdm["FID low"], pdm["FID high"]) == pytest.approx(t_interval(fids, 0.95))
    deltas = [records[3 + s]["fid"] - records[s]["fid"] for s in range(2)]
    assert (pdm["ΔFID vs ddpm"], pdm["ΔFID vs ddpm low"], pdm["ΔFID vs ddpm high"]) == pytest.approx(
        t_interval(deltas, 0.95))
    assert "mean (3 seeds)" in set(main["seed"])


def test_report_settings_validate_and_stay_out_of_every_identity(ci_raw):
    with pytest.raises(ConfigError, match=r"report\.reference_method: 'ddmp' is not one of .*did you mean 'ddpm'"):
        resolve_config({**ci_raw, "report": {"reference_method": "ddmp"}})
    only_pdm = resolve_config({**ci_raw, "methods": {"pdm": {}}})  # the default reference may be absent
    assert only_pdm.report.reference_method == "ddpm" and only_pdm.report.confidence == 0.95
    base = resolve_config(ci_raw)
    other = resolve_config({**ci_raw, "report": {"reference_method": "pdm", "confidence": 0.9}})
    assert all_identities(base, "pdm", 0) == all_identities(other, "pdm", 0)
    more = resolve_config({**ci_raw, "eval": {**ci_raw["eval"], "bootstrap_samples": 50}})
    changed = {k for k, v in all_identities(more, "pdm", 0).items() if all_identities(base, "pdm", 0)[k] != v}
    assert changed == {"eval_id", "comparison_id"}  # the replicates are evaluation output


def test_an_absent_reference_leaves_the_paired_columns_out_with_a_note(tmp_path):
    ref = features(40, seed=1)
    report(write(tmp_path, [scored("pdm", 0, features(30, seed=2), ref)]), tmp_path / "tables", tmp_path / "plots")
    text = (tmp_path / "tables" / "main.md").read_text()
    assert "ΔFID" not in json.dumps(list(pd.read_csv(tmp_path / "tables" / "main.csv").columns))
    assert "reference method 'ddpm' is not in this table" in text


def test_a_bootstrap_too_large_for_memory_is_refused_before_any_job(ci_raw):
    big = {**ci_raw, "sample": {**ci_raw["sample"], "num_samples": 50000}, "eval": {**ci_raw["eval"], "num_real": 50000}}
    with pytest.raises(ConfigError, match=r"eval\.bootstrap_samples=200 .* set eval\.bootstrap_samples: 0"):
        resolve_config(big)
    assert resolve_config({**big, "eval": {**big["eval"], "bootstrap_samples": 0}}).eval.bootstrap_samples == 0
