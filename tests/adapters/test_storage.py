"""Storage: LocalStorage on a temp folder; S3Storage with the real boto3 against a local moto server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from vgen_app.adapters import storage as storage_mod
from vgen_app.adapters.storage import LocalStorage, S3Storage, Storage, StorageError
from vgen_app.config import reset_settings

PAYLOAD = b"\x00\x01vgen" * 100_000  # ~600 kB: several chunks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def s3_bucket(moto_url: str, aws_env: None) -> str:
    name = f"vgen-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket, "some/prefix", request.getfixturevalue("moto_url"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(PAYLOAD)
    return path


def test_put_read_size_exists_delete(store: Storage, source: Path, tmp_path: Path) -> None:
    key = "inputs/task-1/video/abc.mp4"
    assert not store.exists(key)
    store.put_file(key, source)
    assert store.exists(key)
    assert store.size(key) == len(PAYLOAD)
    with store.open_read(key) as f:
        assert f.read() == PAYLOAD
    chunks = list(store.iter_chunks(key, chunk_size=100_000))
    assert len(chunks) > 1 and b"".join(chunks) == PAYLOAD
    dest = tmp_path / "out" / "copy.mp4"
    store.download_to(key, dest)
    assert dest.read_bytes() == PAYLOAD
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # already gone: no error


def test_range_reads_only_the_asked_bytes(store: Storage, source: Path) -> None:
    key = "results/task-1/run.mp4"
    store.put_file(key, source)
    size = len(PAYLOAD)
    for first, last in [(0, 0), (0, 99), (12_345, 250_000), (size - 10, size - 1), (0, size - 1)]:
        chunks = list(store.iter_range(key, first, last, chunk_size=65_536))
        assert b"".join(chunks) == PAYLOAD[first : last + 1], (first, last)
        assert all(len(c) <= 65_536 for c in chunks)
    with pytest.raises(FileNotFoundError):
        list(store.iter_range("nope/missing.mp4", 0, 10))


def test_missing_object_is_file_not_found(store: Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.open_read("nope/missing.mp4")
    with pytest.raises(FileNotFoundError):
        store.size("nope/missing.mp4")
    with pytest.raises(FileNotFoundError):
        store.download_to("nope/missing.mp4", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_put_overwrites(store: Storage, source: Path, tmp_path: Path) -> None:
    store.put_file("a/b.bin", source)
    other = tmp_path / "other.bin"
    other.write_bytes(b"second")
    store.put_file("a/b.bin", other)
    assert b"".join(store.iter_chunks("a/b.bin")) == b"second"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../etc/passwd",
        "a/../../b",
        "/abs/path",
        "a\\b",
        "a//b",
        "a/./b",
        "sp ace",
        "ü.mp4",
        "a/",
    ],
)
def test_bad_keys_are_refused(store: Storage, source: Path, key: str) -> None:
    with pytest.raises(StorageError):
        store.put_file(key, source)
    with pytest.raises(StorageError):
        store.exists(key)


def test_url_for_is_readable(store: Storage, source: Path) -> None:
    store.put_file("results/run-1.mp4", source)
    url = store.url_for("results/run-1.mp4", expires_s=60)
    if isinstance(store, LocalStorage):
        assert url.startswith("file://")
        assert Path(url.removeprefix("file://")).read_bytes() == PAYLOAD
    else:
        assert "X-Amz-Signature=" in url
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.content == PAYLOAD


def test_local_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path, source: Path) -> None:
    store = LocalStorage(tmp_path / "storage")
    store.put_file("x/y.bin", source)
    assert sorted(p.name for p in (tmp_path / "storage" / "x").iterdir()) == ["y.bin"]


def test_s3_prefix_is_applied(s3_bucket: str, moto_url: str, source: Path) -> None:
    S3Storage(s3_bucket, "/pre/fix/", moto_url).put_file("k.bin", source)
    raw = boto3.client("s3", endpoint_url=moto_url)
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["pre/fix/k.bin"]


def test_s3_missing_bucket_is_a_storage_error(moto_url: str, aws_env: None, source: Path) -> None:
    with pytest.raises(StorageError):
        S3Storage("no-such-bucket", "", moto_url).put_file("k.bin", source)


def test_get_storage_picks_by_settings_and_caches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws_env: None
) -> None:
    monkeypatch.setattr(storage_mod, "_cache", {})
    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path}/st")
    reset_settings()
    try:
        local = storage_mod.get_storage()
        assert isinstance(local, LocalStorage) and local.root == (tmp_path / "st").resolve()
        assert storage_mod.get_storage() is local
        monkeypatch.setenv("STORAGE_URL", "s3://bucket/the/prefix")
        monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
        reset_settings()
        s3 = storage_mod.get_storage()
        assert isinstance(s3, S3Storage)
        assert (s3.bucket, s3.prefix, s3.endpoint_url) == (
            "bucket",
            "the/prefix",
            "http://127.0.0.1:9",
        )
        assert storage_mod.get_storage() is s3
    finally:
        monkeypatch.undo()
        reset_settings()
