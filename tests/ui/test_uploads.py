"""Upload checks: names, types and the size limit, unit by unit and through the real app."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web page needs the `ui` extra")
from fastapi.testclient import TestClient

from notebook_agent.ui.runs import RunsConfig
from notebook_agent.ui.server import UIConfig, create_app
from notebook_agent.ui.uploads import UploadRejected, check_name, receive_files

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"


@pytest.mark.parametrize("name", ["sales.csv", "Sales 2024-Q1.xlsx", "a_b.c.tsv", "x.JSONL", "data.parquet"])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "..\\x.csv", "/etc/passwd.csv", "C:\\data.csv", "c:data.csv", "sub/dir.csv", "..",
    "a..csv", ".hidden.csv", "", "   ", "tab\tname.csv", "nul\x00.csv", "é.csv", "semi;colon.csv",
    "x" * 200 + ".csv", "trailing.csv.", "run.json", "trajectory.json", "events.jsonl",
])
def test_unsafe_names_are_refused_with_400(name):
    with pytest.raises(UploadRejected) as e:
        check_name(name)
    assert e.value.status == 400, e.value.message


@pytest.mark.parametrize("name", ["evil.exe", "analysis.ipynb", "script.py", "archive.tar.gz", "README"])
def test_unsupported_types_are_refused_with_415(name):
    with pytest.raises(UploadRejected) as e:
        check_name(name)
    assert e.value.status == 415
    assert ".csv" in e.value.message  # the message lists what is allowed


def _body(parts: list[tuple[str, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, data in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def _chunks(data: bytes, size: int = 1000, seen: list[int] | None = None):
    for i in range(0, len(data), size):
        if seen is not None:
            seen.append(i)
        yield data[i:i + size]


async def test_oversize_stream_is_cut_off_while_reading(tmp_path):
    """No Content-Length: the limit is counted chunk by chunk and reading stops right after it."""
    body = _body([("big.csv", b"1," * 50_000)])
    seen: list[int] = []
    with pytest.raises(UploadRejected) as e:
        await receive_files("multipart/form-data; boundary=XyZ", None, _chunks(body, seen=seen),
                            tmp_path / "batch", max_bytes=10_000)
    assert e.value.status == 413
    assert len(seen) <= 11  # stopped at the limit, not after the whole 100 kB body
    assert not (tmp_path / "batch").exists()  # the partial file was removed


async def test_a_bad_second_file_removes_the_first(tmp_path):
    body = _body([("good.csv", b"a,b\n1,2\n"), ("../bad.csv", b"x")])
    with pytest.raises(UploadRejected) as e:
        await receive_files("multipart/form-data; boundary=XyZ", str(len(body)), _chunks(body), tmp_path / "b",
                            max_bytes=10_000)
    assert e.value.status == 400
    assert not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


async def test_files_are_written_as_sent(tmp_path):
    data = SALES.read_bytes()
    body = _body([("sales.csv", data), ("notes.txt", b"hello")])
    stored = await receive_files("multipart/form-data; boundary=XyZ", str(len(body)), _chunks(body, 777),
                                 tmp_path / "b", max_bytes=10**6)
    assert [(f.name, f.size) for f in stored] == [("sales.csv", len(data)), ("notes.txt", 5)]
    assert (tmp_path / "b" / "sales.csv").read_bytes() == data


# -- through the real app -----------------------------------------------------------------------
@pytest.fixture
def client(tmp_path):
    config = UIConfig(runs=RunsConfig(runs_dir=tmp_path / "runs"), max_upload_mb=0.05)  # 52 kB
    with TestClient(create_app(config), base_url="http://127.0.0.1:8765") as c:  # the Host check wants a loopback name
        c.tmp = tmp_path
        yield c


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_upload_then_the_file_is_in_the_staging_dir(client):
    r = client.post("/api/files", files=[("files", ("sales.csv", SALES.read_bytes(), "text/csv"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["files"][0]["name"] == "sales.csv" and body["files"][0]["size"] == SALES.stat().st_size
    batch = body["upload"]
    assert (client.tmp / "runs" / "ui" / "_uploads" / batch / "sales.csv").read_bytes() == SALES.read_bytes()


def test_oversized_upload_gets_413_and_nothing_is_kept(client):
    r = client.post("/api/files", files=[("files", ("big.csv", b"9" * 200_000, "text/csv"))])
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    assert _all_files(client.tmp) == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\x.csv", "../escape.csv", "/tmp/abs.csv", ".env.csv"])
def test_path_traversal_names_get_400_and_nothing_is_written_outside(client, name):
    r = client.post("/api/files", files=[("files", (name, b"a,b\n1,2\n", "text/csv"))])
    assert r.status_code == 400, r.text
    assert _all_files(client.tmp) == []
    assert not (client.tmp / "runs" / "ui" / "escape.csv").exists()


def test_unsupported_type_gets_415(client):
    r = client.post("/api/files", files=[("files", ("payload.sh", b"rm -rf /", "text/x-sh"))])
    assert r.status_code == 415
    assert "unsupported file type '.sh'" in r.json()["detail"]
    assert _all_files(client.tmp) == []


def test_not_multipart_gets_415(client):
    r = client.post("/api/files", content=b"a,b\n", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def test_a_run_cannot_name_files_outside_the_staging_dir(client):
    (client.tmp / "secret.csv").write_text("x\n1\n")
    for file_id in ["../../secret.csv", "0" * 32 + "/../../../secret.csv", "nothex/sales.csv", "0" * 32 + "/sales.csv"]:
        r = client.post("/api/runs", json={"question": "how many rows?", "files": [file_id]})
        assert r.status_code == 400, (file_id, r.text)
    assert not (client.tmp / "runs" / "ui").exists() or [p.name for p in (client.tmp / "runs" / "ui").iterdir()] == []


def test_empty_question_gets_400(client):
    assert client.post("/api/runs", json={"question": "  ", "files": []}).status_code == 400
