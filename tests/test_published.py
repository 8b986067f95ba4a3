"""Published results: the shipped file loads with a source on every row; bad files are refused, naming row and fix."""

import io

import pandas as pd
import pytest

from pdm.published import COLUMNS, DEFAULT_PATH, PublishedTableError, load_published, main, published_for

HEADER = ",".join(COLUMNS)
GOOD_ROW = ('cifar10,ddpm,"Ours (L_simple)",fid,3.17,train,50000,1000,true,'
            '"Ho, Jain, Abbeel (2020). Denoising Diffusion Probabilistic Models. Table 1",'
            'https://arxiv.org/abs/2006.11239,unconditional')


def write_csv(tmp_path, *rows, header=HEADER):
    path = tmp_path / "published.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def with_cell(column, text, row=GOOD_ROW):
    """GOOD_ROW with one cell replaced (cells parsed by pandas, so quoted commas stay inside their cell)."""
    cells = pd.read_csv(io.StringIO(HEADER + "\n" + row), dtype=str, keep_default_na=False).iloc[0]
    cells[column] = text
    return ",".join(f'"{c}"' for c in cells)


def test_shipped_file_loads_and_every_row_has_a_source_and_url():
    table = load_published(DEFAULT_PATH)
    assert len(table) >= 1
    assert (table["source"].str.len() > 0).all() and table["url"].str.startswith("https://").all()
    ddpm_train_fid = published_for(table, "cifar10", "fid", eval_set="train")
    assert ddpm_train_fid.loc[ddpm_train_fid["method"] == "ddpm", "value"].tolist() == [3.17]  # Ho et al. Table 1


def test_good_file_is_typed_and_blank_settings_are_missing_not_zero(tmp_path):
    unknown_settings = ('stl10,pdm,PDM,kid,0.012,unknown,,,unknown,"Someone (2025). A paper. Table 2",'
                        'https://arxiv.org/abs/1,')
    table = load_published(write_csv(tmp_path, GOOD_ROW, unknown_settings))
    assert table["value"].tolist() == [3.17, 0.012]
    assert table["num_samples"].iloc[0] == 50000 and pd.isna(table["num_samples"].iloc[1])
    assert pd.isna(table["sampling_steps"].iloc[1])
    assert bool(table["ema"].iloc[0]) is True
    assert pd.isna(table["ema"].iloc[1])
    assert published_for(table, "stl10", "kid")["method"].tolist() == ["pdm"]
    assert published_for(table, "cifar10", "fid", eval_set="test").empty


@pytest.mark.parametrize("column, text, expected", [
    ("source", "", "`source` is empty"),
    ("url", "", "`url` is empty"),
    ("url", "arXiv 2006.11239", "is not a web address"),
    ("value", "3.17 +/- 0.1", "is not a number"),
    ("value", "", "`value` is empty"),
    ("value", "nan", "is not finite"),
    ("value", "-1", "is negative"),
    ("metric", "FID", "metric 'FID' is not one of fid, is, kid, clean_fid"),
    ("method", "s-PDM", "method 's-PDM' is not one of"),
    ("dataset", "cifar-10", "dataset 'cifar-10' is not one of"),
    ("eval_set", "val", "eval_set 'val' is not one of"),
    ("eval_set", "none", "eval_set none on a fid row"),
    ("ema", "yes", "ema 'yes' is not one of true, false, unknown"),
    ("num_samples", "50k", "num_samples '50k' is not a positive whole number"),
    ("sampling_steps", "0", "sampling_steps '0' is not a positive whole number"),
])
def test_bad_cell_is_refused_naming_its_row_and_the_problem(tmp_path, column, text, expected):
    path = write_csv(tmp_path, GOOD_ROW, with_cell(column, text))
    with pytest.raises(PublishedTableError) as err:
        load_published(path)
    message = str(err.value)
    assert "row 2 (line 3" in message and expected in message, message
    assert "row 1 " not in message  # the good row is not blamed


def test_inception_score_must_not_claim_a_reference_set(tmp_path):
    row = with_cell("value", "9.46", with_cell("metric", "is"))  # still eval_set train
    with pytest.raises(PublishedTableError, match="the IS compares with no reference images, write none"):
        load_published(write_csv(tmp_path, row))
    assert load_published(write_csv(tmp_path, with_cell("eval_set", "none", row)))["metric"].tolist() == ["is"]
    with pytest.raises(PublishedTableError, match="impossible for an Inception Score"):
        load_published(write_csv(tmp_path, with_cell("value", "0.5", with_cell("eval_set", "none", row))))


def test_every_problem_is_reported_at_once(tmp_path):
    path = write_csv(tmp_path, with_cell("source", ""), with_cell("metric", "fidelity"))
    with pytest.raises(PublishedTableError) as err:
        load_published(path)
    message = str(err.value)
    assert "2 problem(s)" in message and "row 1 (line 2" in message and "row 2 (line 3" in message


def test_same_number_entered_twice_is_refused(tmp_path):
    with pytest.raises(PublishedTableError, match="lines 2, 3 report the same number twice"):
        load_published(write_csv(tmp_path, GOOD_ROW, with_cell("value", "3.2")))
    other_split = with_cell("value", "5.24", with_cell("eval_set", "test"))  # same paper, other reference set: fine
    assert len(load_published(write_csv(tmp_path, GOOD_ROW, other_split))) == 2


@pytest.mark.parametrize("header, expected", [
    (HEADER.replace(",source", ""), "missing column(s): source"),
    (HEADER + ",table", "unknown column(s): table (put remarks in `note`)"),
])
def test_header_must_name_every_column(tmp_path, header, expected):
    with pytest.raises(PublishedTableError) as err:
        load_published(write_csv(tmp_path, header=header))
    assert expected in str(err.value)


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="create it with the header line dataset,method,paper_name"):
        load_published(tmp_path / "absent.csv")


def test_lookup_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown metric 'FID'"):
        published_for(load_published(), "cifar10", "FID")


def test_check_command_exit_status_and_messages(tmp_path, capsys):
    assert main([str(write_csv(tmp_path, GOOD_ROW))]) == 0
    assert "1 row(s), every one with a source" in capsys.readouterr().out
    assert main([str(write_csv(tmp_path, with_cell("source", "")))]) == 1
    assert "`source` is empty" in capsys.readouterr().err
