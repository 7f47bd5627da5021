"""Paper §5.2–5.3 metrics (R@P, NDCG@k, MAP@K) and the evaluate reports/CLI against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pss_ops import layout, storage
from pss_ops.cli import main
from pss_ops.manifests import CatalogPartition, CatalogPlan
from pss_ops.quality.evaluate import format_table, ranking_report, run_vectors, verification_report
from pss_ops.quality.metrics import (
    QueryMean,
    average_precision_at_k,
    dcg_at_k,
    map_at_k,
    map_summary,
    ndcg_at_k,
    ndcg_summary,
    precision_key,
    query_ndcg_at_k,
    recall_at_precision,
)

LOG2_3 = math.log2(3)  # position 2's discount: 1 / log2(2 + 1)

# Real Amazon-Google ids (data/amazon_google/matches.csv style).
A1, A2, A3, A4 = "amazon:b000jz4hqo", "amazon:b0006zf55o", "amazon:b00004tkvy", "amazon:b000g80lqo"
G = [f"google:http://www.google.com/base/feeds/snippets/{n}" for n in range(1000, 1030)]


# --- recall at precision -------------------------------------------------------------------------


def test_recall_at_precision_hand_computed() -> None:
    # Thresholds: 0.9 P=1 R=1/3; 0.8 P=1 R=2/3; 0.7 P=2/3 R=2/3; 0.6 P=3/4 R=1; 0.5 P=3/5 R=1.
    result = recall_at_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0])
    assert list(result) == ["R@P80", "R@P90", "R@P95"]
    assert result["R@P80"] == pytest.approx(2 / 3)
    assert result["R@P90"] == pytest.approx(2 / 3)
    assert result["R@P95"] == pytest.approx(2 / 3)


def test_recall_at_precision_level_reached_exactly_counts() -> None:
    # P = 3/4 at threshold 0.6 meets 0.75 exactly, so recall 1 is reachable; 0.76 is not met there.
    result = recall_at_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0], precisions=(0.75, 0.76, 0.6))
    assert result == {"R@P75": 1.0, "R@P76": pytest.approx(2 / 3), "R@P60": 1.0}


def test_recall_at_precision_input_order_does_not_matter() -> None:
    scores, labels = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]
    order = [3, 0, 4, 2, 1]
    shuffled = recall_at_precision([scores[i] for i in order], [labels[i] for i in order], precisions=(0.7, 0.8))
    assert shuffled == recall_at_precision(scores, labels, precisions=(0.7, 0.8))


def test_tied_scores_are_one_threshold() -> None:
    # 0.9 P=1 R=1/3; both 0.8s together P=2/3 R=2/3 (never "positive 0.8 alone": P=1 R=2/3); 0.7 P=3/4 R=1.
    labels = [1, 1, 0, 1]
    for scores in ([0.9, 0.8, 0.8, 0.7], [0.9, 0.8, 0.8, 0.7][::-1]):
        result = recall_at_precision(scores, labels if scores[0] == 0.9 else labels[::-1], precisions=(0.8, 0.7, 0.6))
        assert result["R@P80"] == pytest.approx(1 / 3)
        assert result["R@P70"] == 1.0
        assert result["R@P60"] == 1.0


def test_tie_on_the_only_threshold_and_no_level_reached_gives_zero() -> None:
    # One threshold accepting both: P = 1/2.
    assert recall_at_precision([0.5, 0.5], [0, 1]) == {"R@P80": 0.0, "R@P90": 0.0, "R@P95": 0.0}
    assert recall_at_precision([0.5, 0.5], [0, 1], precisions=(0.5,)) == {"R@P50": 1.0}


def test_recall_at_precision_without_positives_is_nan() -> None:
    result = recall_at_precision([0.3, 0.2], [0, 0])
    assert all(math.isnan(v) for v in result.values())
    assert all(math.isnan(v) for v in recall_at_precision([], []).values())


@pytest.mark.parametrize(
    ("scores", "labels", "precisions", "message"),
    [
        ([0.5, 0.4], [1], (0.8,), "one length"),
        ([0.5, float("nan")], [1, 0], (0.8,), "finite"),
        ([0.5, 0.4], [1, 2], (0.8,), "0/1"),
        ([0.5, 0.4], [1, 0], (80,), "precision level"),
    ],
)
def test_recall_at_precision_rejects_bad_input(scores: list[float], labels: list[int], precisions: tuple[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recall_at_precision(scores, labels, precisions)


def test_precision_keys() -> None:
    assert [precision_key(p) for p in (0.8, 0.9, 0.95, 0.925, 0.57)] == ["R@P80", "R@P90", "R@P95", "R@P92.5", "R@P57"]


# --- NDCG ----------------------------------------------------------------------------------------


def test_dcg_hand_computed() -> None:
    # rel [1, 0, 1]: (2^1-1)/log2(2) + 0/log2(3) + (2^1-1)/log2(4) = 1 + 0 + 0.5.
    assert dcg_at_k([1, 0, 1], 3) == pytest.approx(1.5)
    assert dcg_at_k([1, 0, 1], 2) == pytest.approx(1.0)
    assert dcg_at_k([0, 1, 0], 3) == pytest.approx(1 / LOG2_3)
    assert dcg_at_k([], 5) == 0.0


def test_ndcg_three_items_hand_computed() -> None:
    # DCG_3 = 1.5 (above); ideal with 2 relevant = 1 + 1/log2(3) = 1.63093 -> 0.91972.
    assert query_ndcg_at_k([1, 0, 1], 3) == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert query_ndcg_at_k([1, 0, 1], 3) == pytest.approx(0.91972, abs=1e-5)
    # k=1: DCG 1, ideal 1. k=2: DCG 1, ideal 1 + 1/log2(3) -> 0.61315.
    assert query_ndcg_at_k([1, 0, 1], 1) == 1.0
    assert query_ndcg_at_k([1, 0, 1], 2) == pytest.approx(0.61315, abs=1e-5)
    # Three relevant in all, one never retrieved: ideal 1 + 1/log2(3) + 1/2 = 2.13093 -> 0.70392.
    assert query_ndcg_at_k([1, 0, 1], 3, n_relevant=3) == pytest.approx(0.70392, abs=1e-5)


def test_ideal_dcg_capped_at_k() -> None:
    # Five relevant items but k=2: the ideal list is [1, 1], so two hits in two slots is perfect.
    assert query_ndcg_at_k([1, 1, 0], 2, n_relevant=5) == pytest.approx(1.0)


def test_ndcg_mean_excludes_queries_without_relevant_items() -> None:
    lists = [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    first, second = 1.5 / (1 + 1 / LOG2_3), 1 / LOG2_3  # 0.91972, 0.63093
    summary = ndcg_summary(lists, 3)
    assert isinstance(summary, QueryMean)
    assert summary.value == pytest.approx((first + second) / 2)
    assert (summary.queries, summary.excluded) == (2, 1)
    assert ndcg_at_k(lists, 3) == pytest.approx(0.77533, abs=1e-5)
    # Told the third query has a relevant item (never retrieved): it scores 0 and counts.
    told = ndcg_summary(lists, 3, n_relevant=[2, 1, 1])
    assert told.value == pytest.approx((first + second + 0) / 3)
    assert (told.queries, told.excluded) == (3, 0)


def test_ndcg_with_no_scorable_query_is_nan() -> None:
    summary = ndcg_summary([[0, 0], []], 10)
    assert math.isnan(summary.value) and (summary.queries, summary.excluded) == (0, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ndcg_at_k([[1, 1]], 3, n_relevant=[1]), "less than"),
        (lambda: ndcg_at_k([[1]], 3, n_relevant=[1, 2]), "2 entries for 1 queries"),
        (lambda: ndcg_at_k([[1, 2]], 3), "0/1"),
        (lambda: ndcg_at_k([[1]], 0), "k must be"),
    ],
)
def test_ndcg_rejects_bad_input(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# --- AP / MAP ------------------------------------------------------------------------------------


def test_average_precision_hand_computed() -> None:
    # Hits at 1 and 3: P(1) = 1, P(3) = 2/3; each moves recall by 1/n_relevant.
    assert average_precision_at_k([1, 0, 1, 0, 0], n_relevant=2) == pytest.approx((1 + 2 / 3) / 2)  # 5/6
    # Four relevant items, two retrieved: recall tops out at 1/2, AP = (1 + 2/3) / 4 = 5/12.
    assert average_precision_at_k([1, 0, 1, 0, 0], n_relevant=4) == pytest.approx(5 / 12)
    # Cut at k=2: only the first hit counts, (1) / 2.
    assert average_precision_at_k([1, 0, 1, 0, 0], k=2, n_relevant=2) == pytest.approx(0.5)
    assert math.isnan(average_precision_at_k([0, 0], n_relevant=0))


def test_average_precision_default_k_is_30() -> None:
    at_30 = [0] * 29 + [1]
    at_31 = [0] * 30 + [1]
    assert average_precision_at_k(at_30, n_relevant=1) == pytest.approx(1 / 30)
    assert average_precision_at_k(at_31, n_relevant=1) == 0.0
    assert map_at_k([at_30, at_31]) == pytest.approx((1 / 30 + 0) / 2)


def test_map_hand_computed_with_unretrieved_relevant_items() -> None:
    # AP1 = (1 + 2/3) / 4 = 5/12 (4 relevant, 2 retrieved); AP2 = (1/2) / 1; query 3 has no relevant item: excluded.
    lists = [[1, 0, 1, 0, 0], [0, 1], [0, 0, 0]]
    summary = map_summary(lists, 30, n_relevant=[4, 1, 0])
    assert summary.value == pytest.approx((5 / 12 + 1 / 2) / 2)  # 11/24
    assert (summary.queries, summary.excluded) == (2, 1)
    assert map_at_k(lists, 30, n_relevant=[4, 1, 0]) == pytest.approx(11 / 24)
    # Without n_relevant, each list's own hits are all there is: AP1 = 5/6.
    assert map_at_k(lists) == pytest.approx((5 / 6 + 1 / 2) / 2)


# --- ranking report ------------------------------------------------------------------------------


def ranked(query: str, candidates: list[str]) -> list[dict[str, object]]:
    return [{"query_item_id": query, "candidate_item_id": c, "rank": r} for r, c in enumerate(candidates, start=1)]


def tiny_pairs() -> pd.DataFrame:
    """A1 -> [G0, G20, G1], A2 -> [G21, G2], A3 -> [G22]; A4 has no results. Rows deliberately out of rank order."""
    rows = ranked(A1, [G[0], G[20], G[1]]) + ranked(A2, [G[21], G[2]]) + ranked(A3, [G[22]])
    return pd.DataFrame(rows[::-1])


def tiny_truth() -> pd.DataFrame:
    """A1: G0, G1 (both retrieved); A2: G2, G3 (G3 not retrieved); A3: none; A4: G4 (no results). One duplicate row."""
    pairs = [(A1, G[0]), (A1, G[1]), (A2, G[2]), (A2, G[3]), (A4, G[4]), (A1, G[0])]
    return pd.DataFrame(pairs, columns=["id_a", "id_b"])


def test_ranking_report_hand_computed() -> None:
    # A1 rel [1,0,1], n=2: NDCG@1 1, NDCG@10 = 1.5 / (1 + 1/log2 3) = 0.91972, AP = (1 + 2/3)/2 = 5/6.
    # A2 rel [0,1],   n=2: NDCG@1 0, NDCG@10 = (1/log2 3) / (1 + 1/log2 3) = 0.38685, AP = (1/2)/2 = 1/4.
    # A4 no results,  n=1: all 0.  A3 no true partner: excluded.
    a1 = 1.5 / (1 + 1 / LOG2_3)
    a2 = (1 / LOG2_3) / (1 + 1 / LOG2_3)
    report = ranking_report(tiny_pairs(), tiny_truth())
    assert report == {
        "ranking_queries": 3,
        "ranking_queries_without_results": 1,
        "queries_without_true_partners": 1,
        "ndcg@1": round(1 / 3, 4),
        "ndcg@10": round((a1 + a2 + 0) / 3, 4),
        "ndcg@20": round((a1 + a2 + 0) / 3, 4),
        "map@30": round((5 / 6 + 1 / 4 + 0) / 3, 4),
    }
    assert report["ndcg@10"] == 0.4355 and report["map@30"] == 0.3611


def test_ranking_report_cutoffs_and_direction() -> None:
    # NDCG@2: A1 DCG 1 over ideal 1 + 1/log2 3; A2 DCG 1/log2 3 over the same ideal. MAP@2: A1 1/2, A2 1/4.
    report = ranking_report(tiny_pairs(), tiny_truth(), ks=(2,), map_k=2)
    ideal = 1 + 1 / LOG2_3
    assert report["ndcg@2"] == round((1 / ideal + (1 / LOG2_3) / ideal) / 3, 4)
    assert report["map@2"] == round((1 / 2 + 1 / 4) / 3, 4)
    # Pairs are directed: G0 -> A1 needs G0's results, which there are none of.
    reverse = ranking_report(tiny_pairs(), pd.DataFrame([(G[0], A1)], columns=["id_a", "id_b"]))
    assert reverse["ranking_queries"] == 1 and reverse["ranking_queries_without_results"] == 1
    assert reverse["queries_without_true_partners"] == 3
    assert reverse["ndcg@10"] == 0.0 and reverse["map@30"] == 0.0


# --- verification report -------------------------------------------------------------------------


def tiny_vectors() -> dict[str, np.ndarray]:
    f32 = np.float32
    return {
        A1: np.array([1.0, 0.0, 0.0], f32),
        A2: np.array([0.0, 1.0, 0.0], f32),
        A3: np.array([0.0, 0.0, 2.0], f32),  # not unit length: cosine, not dot product
        A4: np.array([1.0, 1.0, 0.0], f32),
        G[1]: np.array([0.8, 0.6, 0.0], f32),
        G[2]: np.array([0.0, 0.6, 0.8], f32),
        G[3]: np.array([0.0, 0.0, 1.0], f32),
        G[4]: np.array([1.0, -1.0, 0.0], f32),
    }


def tiny_labelled() -> pd.DataFrame:
    rows = [
        (A3, G[3], 1),  # cos 1.0
        (A1, G[1], 1),  # cos 0.8
        (A2, G[2], 0),  # cos 0.6
        (A1, G[2], 1),  # cos 0.0
        (A4, G[4], 0),  # cos 0.0 (tied with the positive above)
        (A1, G[9], 1),  # G9 has no vector
        ("amazon:b000missing", G[1], 0),  # no vector either
    ]
    return pd.DataFrame(rows, columns=["id_a", "id_b", "label"])


def test_verification_report_hand_computed() -> None:
    # Scored: 1.0(+) 0.8(+) 0.6(-) 0.0(+,- tied). Thresholds: P1 R1/3; P1 R2/3; P2/3 R2/3; P3/5 R1.
    report = verification_report(tiny_vectors(), tiny_labelled())
    assert report == {
        "labelled_pairs": 7,
        "labelled_pairs_missing_vector": 2,
        "labelled_positives_missing_vector": 1,
        "verification_positives": 3,
        "verification_negatives": 2,
        "R@P80": round(2 / 3, 4),
        "R@P90": round(2 / 3, 4),
        "R@P95": round(2 / 3, 4),
    }
    at_60 = verification_report(tiny_vectors(), tiny_labelled(), precisions=(0.6, 0.7))
    assert (at_60["R@P60"], at_60["R@P70"]) == (1.0, round(2 / 3, 4))


def test_verification_report_all_missing_is_counted_not_dropped() -> None:
    labelled = pd.DataFrame([(G[9], G[10], "1"), (G[11], A1, "0")], columns=["id_a", "id_b", "label"])
    report = verification_report(tiny_vectors(), labelled)
    assert report["labelled_pairs"] == 2 and report["labelled_pairs_missing_vector"] == 2
    assert report["labelled_positives_missing_vector"] == 1
    assert (report["verification_positives"], report["verification_negatives"]) == (0, 0)
    assert math.isnan(report["R@P80"])


def test_verification_report_rejects_bad_labels() -> None:
    labelled = pd.DataFrame([(A1, G[1], "yes")], columns=["id_a", "id_b", "label"])
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        verification_report(tiny_vectors(), labelled)


def test_format_table_aligns_names() -> None:
    table = format_table({"true_pairs": 4, "ndcg@10": 0.4355, "R@P80": float("nan"), "labelled_pairs_missing_vector": 2})
    lines = table.splitlines()
    width = len("labelled_pairs_missing_vector")
    assert lines == [
        f"{'true_pairs':<{width}}  4",
        f"{'ndcg@10':<{width}}  0.4355",
        f"{'R@P80':<{width}}  nan",
        "labelled_pairs_missing_vector  2",
    ]


# --- CLI -----------------------------------------------------------------------------------------


def write_run(run: Path, vectors: dict[str, np.ndarray]) -> str:
    """A run directory with a two-partition plan manifest and the matching embed/*.parquet files."""
    ids = sorted(vectors)
    halves = {"group_a-00000": ids[: len(ids) // 2], "group_b-00000": ids[len(ids) // 2 :]}
    partitions = []
    for name, members in halves.items():
        matrix = np.stack([vectors[i] for i in members]).astype(np.float32)
        table = pa.table(
            {
                "item_id": pa.array(members, pa.string()),
                "category": pa.array([name.split("-")[0]] * len(members), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1]),
            }
        )
        storage.write_parquet(layout.embedded(str(run), name), table)
        uri = layout.catalog_partition(str(run), name)
        partitions.append(CatalogPartition(name=name, uri=uri, scope=name.split("-")[0], rows=len(members)))
    plan = CatalogPlan(
        partitions=tuple(partitions),
        categories=("group_a", "group_b"),
        rows_read=len(ids),
        rows_accepted=len(ids),
        rows_rejected=0,
        rows_out_of_scope=0,
        reject_reasons={},
        rejects_uri=str(run / "rejects.csv"),
        seconds=0.1,
    )
    plan.write(layout.plan_manifest(str(run)))
    return str(run)


def write_inputs(tmp_path: Path) -> dict[str, str]:
    pairs_uri = str(tmp_path / "similar_items.parquet")
    storage.write_parquet(pairs_uri, pa.Table.from_pandas(tiny_pairs(), preserve_index=False))
    truth = tmp_path / "matches.csv"
    tiny_truth().to_csv(truth, index=False)
    labelled = tmp_path / "labelled.csv"
    tiny_labelled().to_csv(labelled, index=False)
    return {"pairs": pairs_uri, "truth": str(truth), "labelled": str(labelled), "run": write_run(tmp_path / "run", tiny_vectors())}


def test_run_vectors_reads_every_planned_partition(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_vectors())
    vectors = run_vectors(run)
    assert set(vectors) == set(tiny_vectors())
    np.testing.assert_array_equal(vectors[G[4]], tiny_vectors()[G[4]])
    assert set(run_vectors(run, {A1, G[4], "amazon:b000missing"})) == {A1, G[4]}


def test_cli_evaluate_all_metrics_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_inputs(tmp_path)
    out = tmp_path / "reports" / "evaluate.json"
    argv = ["evaluate", "--pairs", paths["pairs"], "--truth", paths["truth"], "--labelled", paths["labelled"], "--run-uri", paths["run"]]
    assert main([*argv, "--json-out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines}
    # Candidate recall counts truth rows: 6, of which (A1,G0) (listed twice) is at rank 1 -> 2/6.
    assert rows["true_pairs"] == "6"
    assert rows["recall@1"] == "0.3333"
    assert rows["ndcg@1"] == "0.3333" and rows["ndcg@10"] == "0.4355" and rows["map@30"] == "0.3611"
    assert rows["R@P80"] == "0.6667" and rows["labelled_pairs_missing_vector"] == "2"
    assert len({len(line) - len(line.split()[-1]) for line in lines}) == 1  # values start in one column
    written = json.loads(out.read_text())
    assert written["ndcg@10"] == 0.4355 and written["map@30"] == 0.3611 and written["ndcg@20"] == 0.4355
    assert written["R@P80"] == written["R@P90"] == written["R@P95"] == 0.6667
    assert (written["verification_positives"], written["verification_negatives"]) == (3, 2)
    assert written["labelled_positives_missing_vector"] == 1
    assert set(written) >= {"recall@1", "recall@5", "recall@10", "ranking_queries", "queries_without_true_partners"}


def test_cli_evaluate_verification_only_and_nan_as_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_inputs(tmp_path)
    labelled = tmp_path / "negatives_only.csv"
    labelled.write_text(f"id_a,id_b,label\n{A2},{G[2]},0\n", encoding="utf-8")
    out = tmp_path / "evaluate.json"
    assert main(["evaluate", "--labelled", str(labelled), "--run-uri", paths["run"], "--json-out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    assert "ndcg@10" not in printed and "recall@1" not in printed
    assert "R@P80" in printed and "nan" in printed
    written = json.loads(out.read_text())
    assert written["R@P80"] is None and written["verification_negatives"] == 1
    assert json.loads(printed.strip().splitlines()[-1]) == written


def test_cli_pairs_only_json_line_keeps_candidate_recall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_inputs(tmp_path)
    assert main(["evaluate", "--pairs", paths["pairs"], "--truth", paths["truth"], "--k", "1,3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Truth rows: (A1,G0) x2 at rank 1, (A1,G1) at 3, (A2,G2) at 2, (A2,G3) and (A4,G4) absent.
    assert (result["true_pairs"], result["recall@1"], result["recall@3"]) == (6, round(2 / 6, 4), round(4 / 6, 4))
    assert result["map@30"] == 0.3611 and "R@P80" not in result


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --pairs with --truth"),
        (["--pairs", "x.parquet"], "--pairs and --truth go together"),
        (["--run-uri", "run"], "--labelled and --run-uri go together"),
    ],
)
def test_cli_evaluate_incomplete_arguments(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *extra]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pss: error: pss evaluate:") and message in line


def test_cli_evaluate_run_without_embed_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_inputs(tmp_path)
    (tmp_path / "run" / "embed" / "group_b-00000.parquet").unlink()
    assert main(["evaluate", "--labelled", paths["labelled"], "--run-uri", paths["run"]]) == 2
    assert "embedded partition not found" in capsys.readouterr().err
