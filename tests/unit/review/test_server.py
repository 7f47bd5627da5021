"""pss review's HTTP server on a free port: the page, the JSON endpoints, the labelling POST and its guards, the CLI."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from pss_ops.cli import main
from pss_ops.matching.training import read_labelled_pairs
from pss_ops.review.server import TOKEN_HEADER, ReviewServer, open_review
from tests.conftest import Subset
from tests.unit.review.conftest import INJECT

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server(injected: Path, tmp_path: Path) -> Iterator[ReviewServer]:
    # The labels folder's name is markup too: the page shows the path.
    started = open_review(str(injected), str(tmp_path / INJECT / "labels.csv"), port=0, queue_size=20)
    thread = threading.Thread(target=started.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield started
    finally:
        started.shutdown()
        started.server_close()
        thread.join(5)


def fetch(server: ReviewServer, path: str, *, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, text) of a GET, or of a POST when body is given (JSON unless already bytes)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode("utf-8")


def post_label(server: ReviewServer, payload: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    sent = {"Content-Type": "application/json", TOKEN_HEADER: server.token} | headers
    status, _, text = fetch(server, "/api/label", body=payload, headers={k: v for k, v in sent.items() if v})
    return status, json.loads(text)


def test_the_page_and_the_data_never_carry_markup_unescaped(server: ReviewServer, ag_subset: Subset) -> None:
    status, headers, page = fetch(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    nonce = re.search(r"script-src 'nonce-([^']+)'", headers["Content-Security-Policy"]).group(1)  # type: ignore[union-attr]
    assert f'<script nonce="{nonce}">' in page and headers["X-Content-Type-Options"] == "nosniff"
    assert f'content="{server.token}"' in page
    assert INJECT not in page and html.escape(INJECT) in page  # the labels path, escaped
    first, second = ag_subset.frame["item_id"].iat[0], ag_subset.frame["item_id"].iat[1]
    answers = [
        fetch(server, "/api/search?q=onerror"),
        fetch(server, f"/api/query?item={quote(first)}"),
        fetch(server, f"/api/query?item={quote(second)}"),
        fetch(server, "/api/summary"),
    ]
    for status, headers, text in answers:
        assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
        assert "<" not in text and ">" not in text
    assert json.loads(answers[0][2])["items"][0]["title"].startswith(INJECT)  # escaped, not altered
    assert dict(json.loads(answers[2][2])["query"]["fields"])["brand"] == INJECT
    assert json.loads(answers[3][2])["labels_uri"].endswith(f"{INJECT}/labels.csv")


def test_labels_need_the_token_and_a_published_pair(server: ReviewServer) -> None:
    (a1, b1), (a2, b2) = server.data.queue[:2]
    pair = {"id_a": a1, "id_b": b1, "label": 1}
    assert post_label(server, pair, **{TOKEN_HEADER: ""}) == (403, {"error": "missing or wrong token: reload the page"})
    assert post_label(server, pair, **{TOKEN_HEADER: server.token[:-1] + "x"})[0] == 403
    assert post_label(server, pair, Host="evil.example:80")[0] == 403  # DNS rebinding
    assert post_label(server, pair, Origin="http://evil.example")[0] == 403
    assert post_label(server, pair, **{"Content-Type": "text/plain"})[0] == 415
    labels = Path(server.data.labels.uri)
    assert not labels.exists()
    for bad in (
        {"id_a": a1, "id_b": "amazon:not-an-item", "label": 1},
        {"id_a": a1, "id_b": a1, "label": 0},
        {"id_a": a1, "id_b": b1, "label": 2},
        {"id_a": a1, "id_b": b1, "label": True},
        {"id_a": a1, "id_b": b1, "label": "1"},
        {"id_a": a1, "id_b": [b1], "label": 1},
        [a1, b1, 1],
    ):
        assert post_label(server, bad)[0] == 400, bad
    assert post_label(server, b"{not json")[0] == 400
    assert not labels.exists()

    assert post_label(server, pair, Origin=server.url.rstrip("/")) == (200, {"id_a": a1, "id_b": b1, "label": 1, "labelled": 1})
    assert post_label(server, {"id_a": a2, "id_b": b2, "label": 1})[0] == 200
    assert post_label(server, {"id_a": b2, "id_b": a2, "label": 0})[1]["labelled"] == 2  # a second label replaces the first
    read = read_labelled_pairs(str(labels))
    assert list(zip(read["id_a"], read["id_b"], read["label"])) == [(a1, b1, 1), (a2, b2, 0)]
    assert len(labels.read_text().splitlines()) == 3

    status, _, text = fetch(server, "/api/queue?pos=0")
    assert status == 200 and json.loads(text)["position"] == 2 and json.loads(text)["left"] == 18
    assert json.loads(fetch(server, "/api/queue?at=1")[2])["pair"]["label"] == 0


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/queue?pos=-1", 400), ("/api/queue?at=x", 400), ("/api/query?item=nope", 404), ("/nothing", 404), ("/api/label", 404)],
)
def test_bad_requests_get_a_json_error(server: ReviewServer, path: str, status: int) -> None:
    got, headers, text = fetch(server, path)
    assert got == status and "error" in json.loads(text) and headers["Content-Type"].startswith("application/json")
    host = fetch(server, "/", headers={"Host": "attacker.example"})
    assert host[0] == 403 and server.token not in host[2]


def test_bad_input_ends_in_one_error_line(injected: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    table = pq.read_table(injected / "similar_items.parquet")
    pq.write_table(table.slice(0, 0), empty / "similar_items.parquet")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["--run", str(tmp_path)], "no similar_items.parquet in"),
            (["--run", str(empty)], "holds no pairs: nothing to review"),
            (["--run", str(injected), "--host", "0.0.0.0"], "--host 0.0.0.0 would serve the page"),
            (["--run", str(injected), "--labels", str(a_file / "labels.csv")], f"cannot write labels to {a_file}/labels.csv"),
            (["--run", str(injected), "--labels", str(tmp_path)], "is a folder"),
            (["--run", str(injected), "--port", str(port), "--labels", str(tmp_path / "l.csv")], f"port {port} on 127.0.0.1 is in use"),
        ]
        for argv, message in cases:
            assert main(["review", *argv]) == 2, argv
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("pss: error: ") and message in lines[0], lines


def test_ctrl_c_stops_the_server(injected: Path) -> None:
    labels = injected / "review" / "labelled_pairs.csv"  # the default: nothing is labelled here, so nothing is written
    argv = [sys.executable, "-m", "pss_ops.cli", "review", "--run", str(injected), "--port", "0"]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}

    # SIGINT as a terminal's Ctrl-C sends it (a child of a background job would otherwise inherit it ignored).
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, preexec_fn=default_sigint
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = re.search(r"open (http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)", first).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(url + "api/summary", timeout=10) as response:
            assert json.loads(response.read())["labelled"] == 0
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"pss review stopped; 0 labelled pairs in {labels}" in out and "Traceback" not in err and not labels.exists()
