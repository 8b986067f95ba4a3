"""The paper tables across datasets: scores and intervals from each experiment's main.csv, the published reference
column joined on (dataset, method, metric), bold only where intervals separate, LaTeX that pastes, unsourced
published rows refused."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from pdm.cli import main as cli
from pdm.html_tables import markdown_to_html
from pdm.paper import paper_scores
from pdm.paper_render import write_paper_tables
from pdm.published import PublishedError, read_published
from pdm.uncertainty import t_interval

FIXTURE = Path(__file__).parent / "fixtures" / "published.csv"


def experiment(root: Path, name: str, dataset: str, scores: dict[str, list[tuple[float, float]]]) -> Path:
    """A finished experiment's tables: main.csv ({method: [(fid, is) per seed]}), results.csv, efficiency.csv."""
    tables = root / name / "tables"
    tables.mkdir(parents=True)
    rows = []
    for method, seeds in scores.items():
        for seed, (fid, inception) in enumerate(seeds):
            rows.append({"method": method, "seed": str(seed), "FID": fid, "FID low": fid - 1, "FID high": fid + 1,
                         "KID": fid / 1000, "KID low": fid / 1000 - 0.001, "KID high": fid / 1000 + 0.001,
                         "IS": inception, "status": "ok"})
        fids = [f for f, _ in seeds]
        mean, low, high = t_interval(fids, 0.95)
        kid_mean, kid_low, kid_high = t_interval([f / 1000 for f in fids], 0.95)
        rows.append({"method": method, "seed": f"mean ({len(seeds)} seeds)", "FID": mean, "FID low": low,
                     "FID high": high, "KID": kid_mean, "KID low": kid_low, "KID high": kid_high,
                     "IS": sum(i for _, i in seeds) / len(seeds), "status": "ok"})
    pd.DataFrame(rows).to_csv(tables / "main.csv", index=False)
    pd.DataFrame([{"method": m, "seed": 0, "dataset": dataset, "status": "ok", "num_samples": 50000, "num_real": 50000,
                   "sampler": "ddim", "sampling_steps": 100} for m in scores]).to_csv(tables / "results.csv", index=False)
    pd.DataFrame([{"method": m, "seed": s, "params": 1000, "device-hours": 2.0, "train img/s": 10.0}
                  for m in scores for s in ("0", "mean", "std")]).to_csv(tables / "efficiency.csv", index=False)
    return tables / "main.csv"


@pytest.fixture
def two_datasets(tmp_path):
    cifar = experiment(tmp_path, "c10", "cifar10", {"pdm": [(10.0, 9.0), (11.0, 9.2), (10.5, 9.1)],
                                                    "ddpm": [(20.0, 8.0), (21.0, 8.1), (20.5, 8.2)]})
    stl = experiment(tmp_path, "stl", "stl10", {"pdm": [(30.0, 7.0), (35.0, 7.5), (40.0, 6.5)],
                                                "ddpm": [(31.0, 7.2), (36.0, 7.1), (41.0, 7.3)]})
    return [cifar, stl]


def test_values_intervals_and_reference_column(two_datasets):
    scores = paper_scores(two_datasets, read_published(FIXTURE))
    cell = scores.set_index(["dataset", "method", "metric"])
    mean, low, high = t_interval([10.0, 11.0, 10.5], 0.95)
    assert cell.loc[("cifar10", "pdm", "fid"), ["value", "low", "high"]].tolist() == pytest.approx([mean, low, high])
    is_mean, is_low, is_high = t_interval([8.0, 8.1, 8.2], 0.95)  # IS: t interval over the seeds, made here
    assert cell.loc[("cifar10", "ddpm", "is"), ["value", "low", "high"]].tolist() == pytest.approx([is_mean, is_low, is_high])
    assert cell.loc[("cifar10", "ddpm", "fid"), "published"] == "3.17"  # Ho et al. 2020, Table 1 (the fixture)
    assert cell.loc[("cifar10", "ddpm", "is"), "published"] == "9.46"
    assert cell.loc[("cifar10", "ddpm", "fid"), "published_keys"] == "a"
    assert cell.loc[("cifar10", "pdm", "fid"), "published"] == "" and cell.loc[("stl10", "ddpm", "fid"), "published"] == ""
    # bold only where the best interval overlaps no other: separated on CIFAR-10, overlapping on STL-10
    assert cell.loc[("cifar10", "pdm", "fid"), "bold"] and not cell.loc[("cifar10", "ddpm", "fid"), "bold"]
    assert not scores[(scores["dataset"] == "stl10") & (scores["metric"] == "fid")]["bold"].any()


def test_written_tables_markdown_latex_html(two_datasets, tmp_path):
    out = tmp_path / "paper"
    write_paper_tables(two_datasets, out, FIXTURE)
    markdown = (out / "paper_fid.md").read_text()
    assert "cifar10 ours" in markdown and "stl10 published" in markdown and "3.17 (a)" in markdown
    assert "(a) Ho, Jain, Abbeel 2020" in markdown and "https://arxiv.org/abs/2006.11239" in markdown
    assert "**10.5**" in markdown and "**30" not in markdown  # the bold rule, as rendered
    latex = (out / "paper_fid.tex").read_text()
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    assert latex.count("{") == latex.count("}")
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    header = next(line for line in latex.splitlines() if line.startswith("method &"))
    assert len(body) == 2 and all(line.count("&") == header.count("&") == 4 for line in body)  # 1 + 2 per dataset
    assert r"3.17\textsuperscript{a}" in latex and r"\textbf{10.5}" in latex
    assert "<b>10.5</b>" in (out / "paper_fid.html").read_text()
    efficiency = pd.read_csv(out / "paper_efficiency.csv")
    assert efficiency[["dataset", "method"]].values.tolist() == [["cifar10", "pdm"], ["cifar10", "ddpm"],
                                                                  ["stl10", "pdm"], ["stl10", "ddpm"]]
    assert (out / "paper_is.tex").exists() and (out / "paper_kid.md").exists()


def test_published_row_without_source_is_refused(tmp_path, two_datasets):
    bad = tmp_path / "published.csv"
    bad.write_text(FIXTURE.read_text() + "cifar10,pdm,PDM,fid,2.5,train,50000,1000,true,,,\n")
    with pytest.raises(PublishedError, match=r"line 4: cifar10/pdm/fid\): `source` is empty"):
        read_published(bad)
    assert cli(["paper-tables", "--tables", *map(str, two_datasets), "--published", str(bad),
                "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_published_file_with_missing_column_or_bad_metric(tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("dataset,method,metric,value\ncifar10,ddpm,fid,3.17\n")
    with pytest.raises(PublishedError, match="missing column"):
        read_published(missing)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(FIXTURE.read_text().replace(",fid,3.17,", ",fd,3.17,"))
    with pytest.raises(PublishedError, match="metric"):
        read_published(wrong)


def test_one_dataset_from_two_experiments_is_refused(tmp_path, two_datasets):
    again = tmp_path / "c10_again" / "tables"
    shutil.copytree(two_datasets[0].parent, again)
    with pytest.raises(ValueError, match="cifar10 come from more than one table"):
        paper_scores([two_datasets[0], again / "main.csv"])


def test_cli_writes_tables_and_sample_figure(tmp_path, two_datasets):
    from PIL import Image

    for table in two_datasets:
        plots = table.parent.parent / "plots"
        plots.mkdir()
        Image.new("L", (32, 16), 128).save(plots / "samples_pdm_seed0.png")
    assert cli(["paper-tables", "--tables", *map(str, two_datasets), "--out", str(tmp_path / "t"),
                "--plots", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "samples.png").stat().st_size > 0


def test_markdown_to_html_escapes_and_bolds():
    page = markdown_to_html("| a | b |\n|:--|--:|\n| **1** | <x> |\n\nnote & more\n- (a) source\n", "t")
    assert "<b>1</b>" in page and "&lt;x&gt;" in page and "<li>(a) source</li>" in page and "note &amp; more" in page
