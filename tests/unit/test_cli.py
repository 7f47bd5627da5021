"""`pss step`: one subparser per step with only its options, dispatched through STEPS, as the orchestrators invoke it."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import subprocess
import sys
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pss_ops import layout, storage
from pss_ops.cli import ARRAY_INDEX_ENV, STEPS, build_parser, main
from pss_ops.cli.step import Step, _partition_number
from pss_ops.config import AppConfig
from pss_ops.manifests import CatalogPlan, RunContext
from pss_ops.orchestration.fanout import PARTITIONED_STEPS, step_arguments
from pss_ops.orchestration.request import RunRequest, prepare_run
from tests.conftest import SNAPSHOT, Subset, write_config

# The steps the DAGs run once per run (prepare_run → plan, plan_index, publish, report; the training DAGs' train, train-matcher).
ONCE_PER_RUN = ("plan", "plan-index", "publish", "report", "train", "train-matcher")
RUN = "/runs/app/2024-05-01/r1"
PER_PARTITION = {"--run-uri", "--partition", "--partition-offset"}
# Each step's options as `pss step` accepted them before the split (the options scripts use today).
OPTIONS = {
    "plan": {
        *("--run-uri", "--config", "--catalog", "--categories", "--category"),
        *("--snapshot-date", "--run-id", "--cache-uri", "--full-refresh", "--k"),
    },
    "embed": PER_PARTITION,
    "plan-index": {"--run-uri"},
    "build-index": PER_PARTITION,
    "query": PER_PARTITION,
    "post-filter": PER_PARTITION,
    "search": PER_PARTITION,
    "publish": {"--run-uri", "--warehouse-url"},
    "report": {"--run-uri"},
    "train": {"--run-uri", "--config", "--catalog", "--pairs", "--registry", "--holdout", "--seed", "--epochs", "--training-config"},
    "train-matcher": {"--run-uri", "--config", "--catalog", "--pairs", "--registry", "--seed"},
}
# option: (its command-line value, or None for a flag; the namespace attribute; the parsed value)
SAMPLES: dict[str, tuple[str | None, str, Any]] = {
    "--run-uri": ("s3://bucket/runs/r2", "run_uri", "s3://bucket/runs/r2"),
    "--partition": ("3", "partition", 3),
    "--partition-offset": ("40", "partition_offset", 40),
    "--config": ("app.yaml", "config", "app.yaml"),
    "--catalog": ("catalog.csv", "catalog", "catalog.csv"),
    "--categories": ("a,b", "categories", "a,b"),
    "--category": ("a, b", "category", ["a, b"]),
    "--snapshot-date": ("2024-05-02", "snapshot_date", dt.date(2024, 5, 2)),
    "--run-id": ("r2", "run_id", "r2"),
    "--cache-uri": ("dynamodb://embeddings", "cache_uri", "dynamodb://embeddings"),
    "--full-refresh": (None, "full_refresh", True),
    "--k": ("7", "k", 7),
    "--warehouse-url": ("sqlite:///w.sqlite", "warehouse_url", "sqlite:///w.sqlite"),
    "--pairs": ("pairs.csv:labelled", "pairs", ["pairs.csv:labelled"]),
    "--registry": ("s3://bucket/models", "registry", "s3://bucket/models"),
    "--holdout": ("0.2", "holdout", 0.2),
    "--seed": ("5", "seed", 5),
    "--epochs": ("2", "epochs", 2),
    "--training-config": ("training.yaml", "training_config", "training.yaml"),
}
# Where a step parses an option differently: train-matcher takes one labelled-pairs file, not train's repeatable sources.
PARSED_BY_STEP: dict[tuple[str, str], Any] = {("train-matcher", "--pairs"): "pairs.csv:labelled"}
CATALOG_PARTITIONED = ("embed", "query", "post-filter", "search")


def _parse(*argv: str) -> Namespace:
    return build_parser().parse_args(["step", *argv])


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


# --- each step's options ----------------------------------------------------------------------------


def test_samples_cover_every_option() -> None:
    assert set(SAMPLES) == set().union(*OPTIONS.values())


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_step_takes_exactly_its_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    for option, (value, attribute, parsed) in SAMPLES.items():
        argv = [name, *(["--run-uri", RUN] if option != "--run-uri" else []), option, *([value] if value is not None else [])]
        capsys.readouterr()
        if option in OPTIONS[name]:
            assert getattr(_parse(*argv), attribute) == PARSED_BY_STEP.get((name, option), parsed), option
        else:
            with pytest.raises(SystemExit) as exit_info:
                _parse(*argv)
            assert exit_info.value.code == 2
            assert f"pss: error: unrecognized arguments: {option}" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_steps_help_shows_only_its_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", _help(capsys, "step", name))) - {"--help"}
    assert shown == OPTIONS[name]


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_step_requires_run_uri(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(name)
    assert exit_info.value.code == 2
    assert "the following arguments are required: --run-uri" in capsys.readouterr().err


def test_embed_help_leaves_out_the_other_steps_options(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _help(capsys, "step", "embed")
    assert "--partition-offset" in shown and ARRAY_INDEX_ENV in shown
    for other in ("--catalog", "--warehouse-url", "--config", "--pairs", "--cache-uri"):
        assert other not in shown


def test_step_help_lists_every_step_with_its_one_line_help(capsys: pytest.CaptureFixture[str]) -> None:
    shown = " ".join(_help(capsys, "step").split())
    for name, spec in STEPS.items():
        assert "\n" not in spec.help
        assert f" {name} {spec.help}" in shown, name


# --- the command lines the orchestrators build ----------------------------------------------------------


@pytest.mark.parametrize("name", [*PARTITIONED_STEPS, "query", "post-filter"])
def test_fanout_partition_arguments_parse(name: str) -> None:
    plain = _parse(*step_arguments(name, RUN, offset=6))
    assert (plain.step, plain.run_uri, plain.partition, plain.partition_offset) == (name, RUN, 6, None)
    array = _parse(*step_arguments(name, RUN, offset=6, array=True))
    assert (array.step, array.run_uri, array.partition, array.partition_offset) == (name, RUN, None, 6)


@pytest.mark.parametrize("name", ONCE_PER_RUN)
def test_fanout_single_step_arguments_parse(name: str) -> None:
    args = _parse(*step_arguments(name, RUN))
    assert (args.step, args.run_uri) == (name, RUN)


def test_training_dag_arguments_reach_train(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # As plugins/pss_airflow/train_dag.py builds them after `train --run-uri RUN`.
    extra = ["--config", f"{RUN}/config.yaml", "--catalog", "s3://b/catalog.parquet", "--pairs", "a.csv:labelled"]
    extra += ["--pairs", "b.csv:behaviour", "--registry", "s3://b/models", "--holdout", "0.3", "--seed", "7"]
    extra += ["--training-config", f"{RUN}/training.yaml"]
    seen: list[tuple[Namespace, str]] = []

    def fake_train(args: Namespace, report_uri: str) -> dict[str, Any]:
        seen.append((args, report_uri))
        return {"model_id": "siamese-x", "when": dt.date(2024, 5, 1)}

    monkeypatch.setattr("pss_ops.cli.step.train_from_arguments", fake_train)
    capsys.readouterr()
    assert main(["step", *step_arguments("train", RUN), *extra]) == 0
    ((args, report_uri),) = seen
    assert report_uri == storage.join(RUN, "train", "report.json")
    assert (args.config, args.catalog, args.registry) == (f"{RUN}/config.yaml", "s3://b/catalog.parquet", "s3://b/models")
    assert (args.pairs, args.holdout, args.seed, args.epochs) == (["a.csv:labelled", "b.csv:behaviour"], 0.3, 7, None)
    assert args.training_config == f"{RUN}/training.yaml"
    assert capsys.readouterr().out.strip() == '{"model_id": "siamese-x", "when": "2024-05-01"}'


@pytest.mark.parametrize(("given", "expected"), [([], 5), (["--seed", "9"], 9)])
def test_train_seed_is_the_given_one_else_the_training_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: list[str], expected: int
) -> None:
    # One seed per run (split, mining, training): --seed wins, else the YAML's; never a silent 0 beside a seeded YAML.
    recipe = tmp_path / "training.yaml"
    recipe.write_text("seed: 5\nepochs: 3\n")
    seen: dict[str, Any] = {}

    def fake_train_model(config: AppConfig, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return {"model_id": "siamese-x"}

    monkeypatch.setattr("pss_ops.learning.pipeline.train_model", fake_train_model)
    config = tmp_path / "app.yaml"
    config.write_text("application: a\nfeatures: [{type: char_ngram}]\n")
    arguments = ["--config", str(config), "--catalog", "c.csv", "--pairs", "m.csv", "--registry", str(tmp_path / "models")]
    assert main(["step", "train", "--run-uri", str(tmp_path / "run"), *arguments, "--training-config", str(recipe), *given]) == 0
    assert (seen["training"].seed, seen["training"].epochs) == (expected, 3)
    assert seen["pair_sources"] == [("m.csv", "labelled")]


def usage_failure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """A command's exit status and its `pss: error:` lines (usage messages keep exit status 1 and their text)."""
    capsys.readouterr()
    code = main(argv)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("pss: error:")]


def test_step_train_without_its_inputs_keeps_the_pss_train_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_failure(["step", "train", "--run-uri", RUN, "--config", "app.yaml"], capsys) == (
        1,
        ["pss: error: pss train: --config, --catalog, --pairs and --registry are required"],
    )


# --- the dispatch table ---------------------------------------------------------------------------------


def test_dispatch_table_covers_every_step_the_orchestrators_run() -> None:
    assert set(STEPS) == set(PARTITIONED_STEPS) | set(ONCE_PER_RUN) | {"query", "post-filter"}
    assert set(STEPS) == set(OPTIONS)


def test_each_step_name_runs_its_own_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, str]] = []
    for name, spec in list(STEPS.items()):

        def handler(args: Namespace, name: str = name) -> int:
            ran.append((name, args.step))
            return 0

        monkeypatch.setitem(STEPS, name, Step(spec.help, spec.options, handler))
    for name in STEPS:
        assert main(["step", name, "--run-uri", RUN]) == 0
    assert ran == [(name, name) for name in STEPS]


# --- partitions and errors on a planned run ---------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """A run planned by `pss step plan` from the arguments prepare_run builds for the DAG."""

    request: RunRequest
    plan: CatalogPlan
    printed: str


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory, ag_subset: Subset, small_config: AppConfig) -> Planned:
    root = tmp_path_factory.mktemp("cli")
    config_path = write_config(small_config.model_copy(update={"catalog_uri": str(ag_subset.catalog)}), root / "app.yaml")
    request = prepare_run(
        str(config_path),
        run_id="cli-run",
        snapshot_date=SNAPSHOT,
        runs_uri=str(root / "runs"),
        cache_uri=str(root / "cache.sqlite"),
        categories=["group_b", "group_a"],
        full_refresh=True,
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["step", *step_arguments("plan", request.run_uri), *request.plan_arguments]) == 0
    return Planned(request, CatalogPlan.read(layout.plan_manifest(request.run_uri)), out.getvalue())


def test_prepare_run_arguments_plan_the_run(planned: Planned) -> None:
    request = planned.request
    args = _parse(*step_arguments("plan", request.run_uri), *request.plan_arguments)
    assert (args.config, args.catalog, args.cache_uri) == (request.config_uri, request.catalog_uri, request.cache_uri)
    assert (args.snapshot_date, args.run_id, args.category, args.full_refresh) == (SNAPSHOT, "cli-run", ["group_a", "group_b"], True)
    assert CatalogPlan.model_validate_json(planned.printed) == planned.plan
    assert len(planned.plan.partitions) >= 2
    ctx = RunContext.read(layout.context(request.run_uri))
    assert (ctx.run_id, ctx.snapshot_date, ctx.cache_uri) == ("cli-run", SNAPSHOT, request.cache_uri)
    assert (ctx.categories, ctx.full_refresh) == (("group_a", "group_b"), True)


@pytest.mark.parametrize(
    ("options", "array_index", "expected"),
    [
        (["--partition", "2"], None, 2),
        (["--partition", "2"], "5", 2),  # an explicit partition wins over the array index
        (["--partition-offset", "4"], "3", 7),
        (["--partition-offset", "4"], None, 4),  # a one-partition chunk is a plain job: no array index
        ([], "6", 6),
    ],
)
def test_partition_number(options: list[str], array_index: str | None, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if array_index is None:
        monkeypatch.delenv(ARRAY_INDEX_ENV, raising=False)
    else:
        monkeypatch.setenv(ARRAY_INDEX_ENV, array_index)
    assert _partition_number(_parse("embed", "--run-uri", RUN, *options)) == expected


@pytest.mark.parametrize("name", CATALOG_PARTITIONED)
def test_no_partition_is_refused_with_todays_message(
    name: str, planned: Planned, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ARRAY_INDEX_ENV, raising=False)
    message = f"pss step {name}: give --partition N, --partition-offset N or set {ARRAY_INDEX_ENV}"
    assert usage_failure(["step", name, "--run-uri", planned.request.run_uri], capsys) == (1, [f"pss: error: {message}"])


@pytest.mark.parametrize("name", CATALOG_PARTITIONED)
def test_array_index_is_added_to_the_offset(
    name: str, planned: Planned, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Past the manifest's end, so the step names the partition it computed instead of running it.
    count = len(planned.plan.partitions)
    monkeypatch.setenv(ARRAY_INDEX_ENV, "3")
    expected = f"catalog partition {count + 3} does not exist; the manifest has {count} (0..{count - 1})"
    argv = ["step", name, "--run-uri", planned.request.run_uri, "--partition-offset", str(count)]
    assert usage_failure(argv, capsys) == (1, [f"pss: error: {expected}"])


def test_missing_manifest_is_one_error_line_and_exit_2(planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["step", "report", "--run-uri", str(tmp_path / "never-planned")]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith("pss: error: manifest not found:") and "run.json" in line
    # A planned run whose index plan is missing: build-index names that manifest.
    assert main(["step", "build-index", "--run-uri", planned.request.run_uri, "--partition", "0"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith("pss: error: manifest not found:") and "index_plan" in line


def test_python_m_exit_statuses(planned: Planned, tmp_path: Path) -> None:
    """`python -m pss_ops.cli` as the local executor runs it: usage errors exit 1 with the message, failures exit 2."""

    def pss(*argv: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != ARRAY_INDEX_ENV}
        return subprocess.run([sys.executable, "-m", "pss_ops.cli", "step", *argv], capture_output=True, text=True, env=env, check=False)

    no_partition = pss("embed", "--run-uri", planned.request.run_uri)
    assert no_partition.returncode == 1 and no_partition.stdout == ""
    assert (
        no_partition.stderr.splitlines()[-1]
        == f"pss: error: pss step embed: give --partition N, --partition-offset N or set {ARRAY_INDEX_ENV}"
    )
    missing = pss("plan-index", "--run-uri", str(tmp_path / "never-planned"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert [line for line in missing.stderr.splitlines() if line.startswith("pss: error:")] == [
        f"pss: error: manifest not found: {layout.context(str(tmp_path / 'never-planned'))} (has the previous step finished?)"
    ]
