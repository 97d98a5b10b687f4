"""Names and text that cannot break anything, over HTTP and the CLI, on SQLite and PostgreSQL:
one rule for names, exports under any valid name, no phantom snapshot versions, control characters
refused (422) in every text field, bounded ids, 413 for oversized chunked bodies."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from urllib.parse import unquote

import pytest
from sqlalchemy import func, select

from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.store import FeedbackStore
from rlhf_dist.feedback.tables import Campaign, Pair, Snapshot, Vote
from tests.feedback.conftest import add_annotator, import_pairs, make_pairs

pytestmark = pytest.mark.slow
BAD_NAMES = ["a/b", "", "   ", "x" * 201, "tab\there", "nul\x00", "bell\x07", "esc\x1b[2J", "del\x7f",
             "rlm\u200fmark", "line\nbreak"]
GOOD_NAMES = ["Runde-ü-☕", "סבב ראשון", "round 1 (pilot)", "a.b-c_d"]


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == expect, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _count(db_url: str, table) -> int:  # noqa: ANN001 - a mapped class
    with transaction(open_database(db_url)) as session:
        return session.scalar(select(func.count()).select_from(table))


def _vote_all(client, campaign: str) -> int:  # noqa: ANN001 - httpx.Client
    voted = 0
    while (r := client.get("/api/v1/tasks/next", params={"campaign": campaign})).status_code == 200:
        body = {"task_id": r.json()["task_id"], "choice": "left", "confidence": 0.9,
                "request_id": uuid.uuid4().hex}
        assert client.post("/api/v1/votes", json=body).status_code == 201
        voted += 1
    return voted


def test_names_follow_one_rule(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    for bad in BAD_NAMES:
        for path, body in [("/api/v1/campaigns", {"name": bad}), ("/api/v1/annotators", {"name": bad})]:
            r = admin.post(path, json=body)
            assert (r.status_code, r.json()["field"]) == (422, "name"), (path, bad, r.text)
            assert r.json()["error"].startswith("name: ")
    assert "'/'" in admin.post("/api/v1/campaigns", json={"name": "a/b"}).json()["error"]
    assert _count(db_url, Campaign) == 0 and [a["name"] for a in admin.get("/api/v1/annotators").json()] == ["admin"]
    for good in GOOD_NAMES:
        assert admin.post("/api/v1/campaigns", json={"name": good}).status_code == 201, good
        assert admin.post("/api/v1/annotators", json={"name": good}).status_code == 201, good
    assert [c["name"] for c in admin.get("/api/v1/campaigns").json()] == GOOD_NAMES


def test_export_works_under_any_valid_name_without_phantom_versions(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    alice = server.client(add_annotator(admin, "alice"))
    for name in GOOD_NAMES[:2]:
        import_pairs(admin, name, make_pairs(2))
        assert _vote_all(alice, name) == 2
        for version in (1, 2):
            r = admin.post(f"/api/v1/campaigns/{name}/export")
            assert r.status_code == 200, r.text
            assert r.headers["x-snapshot-version"] == str(version)
            disposition = r.headers["content-disposition"]
            assert disposition.isascii() and disposition.startswith("attachment; filename=")
            encoded = disposition.split("filename*=UTF-8''")[1]
            assert unquote(encoded) == f"{name}-v{version}.jsonl"  # RFC 6266 / 5987
            assert len(r.text.splitlines()) == 2
    with transaction(open_database(db_url)) as session:
        versions = session.execute(select(Campaign.name, Snapshot.version).join(Campaign)
                                   .order_by(Snapshot.id)).all()
    assert [tuple(v) for v in versions] == [(n, v) for n in GOOD_NAMES[:2] for v in (1, 2)]


def test_a_failed_export_records_no_version(db_url, tmp_path):
    FeedbackStore(db_url).add("p", "a", "b", preference=0)
    db = ["--feedback.db_url", db_url]
    out = tmp_path / "votes.jsonl"
    (tmp_path / "votes.jsonl.meta.json").mkdir()  # the metadata cannot be written
    r = cli("feedback", "export", str(out), "--campaign", "round-0", *db, expect=2)
    assert len(r.stderr.strip().splitlines()) == 1 and "votes.jsonl.meta.json" in r.stderr, r.stderr
    assert not out.exists() and _count(db_url, Snapshot) == 0
    (tmp_path / "votes.jsonl.meta.json").rmdir()
    assert "snapshot v1 " in cli("feedback", "export", str(out), "--campaign", "round-0", *db).stdout
    r = cli("feedback", "export", str(out), "--campaign", "round-0", "--version", str(2**63), *db, expect=2)
    assert r.stderr.startswith("rlhf-dist feedback export: --version: ")
    r = cli("feedback", "export", str(out), "--campaign", "round\x01", *db, expect=2)
    assert r.stderr.startswith("rlhf-dist feedback export: --campaign: control character")
    assert _count(db_url, Snapshot) == 1


def test_control_characters_and_huge_ids_are_refused_everywhere(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(2))
    alice = server.client(add_annotator(admin, "alice"))
    task = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()

    def vote(**change):
        body = {"task_id": task["task_id"], "choice": "left", "confidence": 0.9, "request_id": "r1", **change}
        return alice.post("/api/v1/votes", json=body)

    cases = [
        (vote(reasoning="a\x00b"), "reasoning"),
        (vote(reasoning="\x1b[31mred"), "reasoning"),
        (vote(task_id=2**63), "task_id"),
        (vote(task_id=2**31), "task_id"),
        (vote(task_id=0), "task_id"),
        (alice.post(f"/api/v1/tasks/{2**63}/skip"), "task_id"),
        (alice.get("/api/v1/tasks/next", params={"campaign": "c1\x00"}), "campaign"),
        (alice.get("/api/v1/progress", params={"campaign": "\x00"}), "campaign"),
        (alice.get("/api/v1/votes", params={"campaign": "c\x00"}), "campaign"),
        (admin.get("/api/v1/votes", params={"annotator": "alice\x00"}), "annotator"),
        (admin.get("/api/v1/stats", params={"campaign": "c1\x1b"}), "campaign"),
        (admin.post("/api/v1/campaigns/c1%00/export"), "name"),
        (admin.post("/api/v1/campaigns/c1/import", params={"filename": "p\x00.jsonl"}, content=b"{}"), "filename"),
        (admin.post("/api/v1/campaigns/c%00/import", params={"filename": "p.jsonl"},
                    content=json.dumps(make_pairs(1)[0])), "name"),
        (admin.post("/api/v1/annotators/alice%00/disable"), "name"),
    ]
    for r, field in cases:
        assert (r.status_code, r.json().get("field")) == (422, field), (r.request.url, r.text)
    assert _count(db_url, Vote) == 0

    r = vote(reasoning="line one\nline two\twith a tab")  # layout in free text is fine
    assert r.status_code == 201, r.text
    with transaction(open_database(db_url)) as session:
        assert session.scalar(select(Vote.reasoning)) == "line one\nline two\twith a tab"


def test_import_files_with_control_characters_name_file_line_and_field(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(1))
    rows = [{"prompt": "fine\nprompt\twith layout", "response_a": "a", "response_b": "b"},
            {"prompt": "nul \u0000 here", "response_a": "a", "response_b": "b"},
            {"prompt": "p", "response_a": "clear screen \u001b[2J", "response_b": "b"},
            {"prompt": "p", "response_a": "a", "response_b": "b", "source_a": "model\nB"},
            {"prompt": "p", "response_a": "a", "response_b": "b", "seed": 2**63}]
    body = "".join(json.dumps(r) + "\n" for r in rows)
    r = admin.post("/api/v1/campaigns/c1/import", params={"filename": "mine.jsonl"}, content=body)
    assert (r.status_code, r.json()["field"]) == (422, "file"), r.text
    error = r.json()["error"]
    for where in ("mine.jsonl:2: prompt: control character '\\x00'", "mine.jsonl:3: response_a: control character",
                  "mine.jsonl:4: source_a: control character '\\n'", "mine.jsonl:5: seed: "):
        assert where in error, error
    assert "mine.jsonl:1" not in error
    csv_body = "prompt,response_a,response_b\nok,a,b\nnul\x00inside,a,b\n"
    r = admin.post("/api/v1/campaigns/c1/import", params={"filename": "mine.csv"}, content=csv_body.encode())
    assert r.status_code == 422 and "mine.csv:3: prompt: control character" in r.json()["error"], r.text
    assert _count(db_url, Pair) == 1  # only the pair imported before


def test_an_oversized_chunked_body_gets_413(db_url, serve):
    server = serve(db_url, max_body_kb=4)
    admin = server.client()

    def chunks(n: int):
        for _ in range(n):
            yield b" " * 1024

    for path in ("/api/v1/campaigns", "/api/v1/votes"):
        r = admin.post(path, content=chunks(12), headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["field"]) == (413, "body"), (path, r.text)
    small = json.dumps({"name": "chunked"}).encode()
    r = admin.post("/api/v1/campaigns", content=iter([small[:5], small[5:]]),
                   headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text  # a chunked body under the limit is read as usual
    assert [c["name"] for c in admin.get("/api/v1/campaigns").json()] == ["chunked"]


def test_cli_refuses_bad_names_and_files_in_one_line(db_url, tmp_path):
    db = ["--feedback.db_url", db_url]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok", "response_a": "a", "response_b": "b"}) + "\n"
                   + json.dumps({"prompt": "nul \u0000", "response_a": "a", "response_b": "b"}) + "\n"
                   + json.dumps({"prompt": "p", "response_a": "a", "response_b": "bell \u0007"}) + "\n")
    r = cli("feedback", "import", str(bad), "--campaign", "c", *db, expect=3)
    assert f"{bad}:2: prompt: control character '\\x00'" in r.stderr
    assert f"{bad}:3: response_b: control character '\\x07'" in r.stderr
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "ok", "response_a": "a", "response_b": "b"}) + "\n")
    for name in ("a/b", "esc\x1b", "x" * 201):
        r = cli("feedback", "import", str(good), "--campaign", name, *db, expect=2)
        assert r.stderr.startswith("rlhf-dist feedback import: --campaign: ")
        assert len(r.stderr.strip().splitlines()) == 1
        r = cli("feedback", "annotator", "add", name, *db, expect=2)
        assert r.stderr.startswith("rlhf-dist feedback annotator: NAME: ")
    assert "no campaigns yet" in cli("feedback", "stats", *db).stdout
