"""Bad configs and flags through the real `pss run`: each fails before any compute with one `pss: error:` line naming it.

The catalogs' own faults are in test_bad_inputs.py; the machine's (disks, permissions) in test_disk_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pss_ops.cli import WAREHOUSE_ENV, main
from tests.conftest import ROOT

GOOD_CONFIG = """\
application: bad_flags
features:
  - {type: char_ngram, name: grams, dims: 256}
  - {type: model_tokens, name: numbers, dims: 256}
k: 5
"""


@dataclass
class Case:
    """A command line (with {config}, {catalog}, {out}, {tmp} filled in), its exit status and what its line must say."""

    argv: list[str]
    code: int
    says: list[str]
    config: str = GOOD_CONFIG


def with_config(text: str, *extra: str, says: list[str]) -> Case:
    return Case(["--config", "{tmp}/app.yaml", *extra], 2, says, config=text)


CASES: dict[str, Case] = {
    "config file missing": Case(["--config", "{tmp}/nope.yaml"], 2, ["cannot read config", "nope.yaml", "No such file"]),
    "config is a folder": Case(["--config", "{tmp}"], 2, ["cannot read config", "Is a directory"]),
    "config not YAML": with_config("application: x\nfeatures: [\n", says=["is not valid YAML", "line 3"]),
    "config empty": with_config("", says=["expected a mapping at the top level"]),
    "config unknown key": with_config(GOOD_CONFIG + "featurez: []\n", says=["key 'featurez': Extra inputs are not permitted"]),
    "config k zero": with_config(GOOD_CONFIG.replace("k: 5", "k: 0"), says=["key 'k'", "greater than or equal to 1"]),
    "config bad application": with_config(GOOD_CONFIG.replace("bad_flags", '"a/b"'), says=["key 'application'", "pattern"]),
    "config unknown feature type": with_config(
        GOOD_CONFIG.replace("type: char_ngram", "type: char_grams"), says=["key 'features.0'", "char_grams"]
    ),
    "k below one": Case(["--k", "-1"], 2, ["key 'k'", "greater than or equal to 1"]),
    "k above the limit": Case(["--k", "100000"], 2, ["key 'k'", "less than or equal to 1000"]),
    "categories not a list of names": Case(["--categories", "[1, 2]"], 2, ["--categories", "list of names"]),
    "categories broken JSON": Case(["--categories", '["toys"'], 2, ["--categories: not a JSON list of names"]),
    "run id escaping the out folder": Case(["--run-id", "../../elsewhere"], 2, ["run id '../../elsewhere'", "names the run's folder"]),
    "run id with a slash": Case(["--run-id", "2024/05/01"], 2, ["run id '2024/05/01'"]),
    "hidden run id": Case(["--run-id", ".hidden"], 2, ["run id '.hidden'"]),
    "out is a file": Case(["--out", "{tmp}/file.txt"], 2, ["output folder", "file.txt is a file, not a folder"]),
    "out under a file": Case(["--out", "{tmp}/file.txt/out"], 2, ["output folder", "file.txt/out is not writable: Not a directory"]),
    "in-memory warehouse": Case(["--warehouse-url", "sqlite://"], 2, ["warehouse sqlite:// is an in-memory SQLite database"]),
    "warehouse in a missing folder": Case(["--warehouse-url", "sqlite:///{tmp}/none/w.sqlite"], 2, ["folder", "none does not exist"]),
    "warehouse database missing": Case(
        ["--warehouse-url", "postgresql+psycopg://postgres:pw@127.0.0.1:5432/pss_no_such_db"],
        1,
        ["postgresql+psycopg://postgres:***@127.0.0.1:5432/pss_no_such_db: connecting", 'database "pss_no_such_db" does not exist'],
    ),
    "warehouse unreachable": Case(["--warehouse-url", "postgresql+psycopg://u:pw@127.0.0.1:9/test"], 1, ["127.0.0.1:9/test: connecting"]),
    "catalog missing": Case(["--catalog", "{tmp}/missing.csv"], 2, ["missing.csv not found"]),
    "catalog unsupported format": Case(["--catalog", "/dev/null"], 2, ["catalog /dev/null: unsupported format"]),
}


@pytest.fixture(autouse=True)
def _no_ambient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv("PSS_DEBUG", raising=False)


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_config_or_flag_fails_before_any_compute_naming_it(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    (tmp_path / "app.yaml").write_text(case.config, encoding="utf-8")
    (tmp_path / "file.txt").write_text("not a folder\n", encoding="utf-8")
    catalog = tmp_path / "catalog.csv"
    pd.read_csv(ROOT / "data" / "amazon_google" / "catalog.csv", dtype=str, nrows=40).to_csv(catalog, index=False)
    fill: Callable[[str], str] = lambda arg: arg.format(tmp=tmp_path)  # noqa: E731
    argv = ["--config", str(tmp_path / "app.yaml"), "--catalog", str(catalog), "--out", str(tmp_path / "out")]
    argv += [fill(a) for a in case.argv]  # argparse keeps the last of a repeated option: the case's
    capsys.readouterr()
    code = main(["run", *argv])
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("pss: error:")]
    assert (code, len(errors)) == (case.code, 1), err
    for fragment in case.says:
        assert fragment in errors[0], errors[0]
    assert "pw@" not in errors[0], "the password is shown"
    assert not [line for line in err if line.startswith("Traceback")]
    assert not list(tmp_path.glob("**/runs/*")), "a run started"


def test_plan_refuses_a_cache_it_cannot_open_before_splitting_the_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "app.yaml").write_text(GOOD_CONFIG, encoding="utf-8")
    catalog = tmp_path / "catalog.csv"
    pd.read_csv(ROOT / "data" / "amazon_google" / "catalog.csv", dtype=str, nrows=40).to_csv(catalog, index=False)
    (tmp_path / "file.txt").write_text("not a folder\n", encoding="utf-8")
    cache = tmp_path / "file.txt" / "embeddings.sqlite"  # under a file: no folder can be made there
    run = tmp_path / "run"
    argv = ["step", "plan", "--run-uri", str(run), "--config", str(tmp_path / "app.yaml"), "--catalog", str(catalog)]
    capsys.readouterr()
    assert main([*argv, "--cache-uri", str(cache)]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("pss: error:")]
    assert str(tmp_path / "file.txt") in line
    assert not (run / "plan").exists(), "the catalog was split before the cache was checked"


def test_evaluate_names_a_pairs_file_that_is_not_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "similar_items.parquet"
    pairs.write_text("query_item_id,candidate_item_id\nb000jx5jy6,b0002hyp0u\n", encoding="utf-8")
    truth = tmp_path / "truth.csv"
    truth.write_text("id_a,id_b\nb000jx5jy6,b0002hyp0u\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", "--pairs", str(pairs), "--truth", str(truth)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"pss: error: {pairs}: ") and "Parquet magic bytes not found" in line
