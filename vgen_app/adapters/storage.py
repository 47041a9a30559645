"""Storage: local disk under var/storage/ by default, S3-compatible (Cloudflare R2) when STORAGE_URL=s3://…

Keys are relative, slash-separated paths (e.g. `inputs/<task>/<slot>/<id>.mp4`). Implementations:
`LocalStorage(root)` and `S3Storage(bucket, prefix, endpoint_url)`; `get_storage()` picks by settings.
Every method does blocking I/O: call from a worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import unquote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vgen_app.config import VAR_DIR, get_settings


class StorageError(Exception):
    pass


class Storage(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Store the file at `source` under `key` (atomically: readers never see a partial object)."""

    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; raises FileNotFoundError if it does not exist."""

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        """The object's bytes in chunks (for streaming downloads)."""

    def iter_range(
        self, key: str, first: int, last: int, chunk_size: int = 256 * 1024
    ) -> Iterator[bytes]:
        """Bytes first..last (inclusive) of the object in chunks, read as they are sent (never
        the whole object at once); raises FileNotFoundError if it does not exist."""

    def download_to(self, key: str, dest: Path) -> None:
        """Copy the object to a local file (e.g. for ffmpeg)."""

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> Iterator[str]:
        """The keys under the folder `prefix` (`inputs/<task>`: every key that starts with
        `inputs/<task>/`), read as they are listed; none if there are none."""

    def delete(self, key: str) -> None:
        """Delete; no error if it is already gone."""

    def url_for(self, key: str, expires_s: int = 3600) -> str:
        """A URL the generation service can read the object from (file:// locally, presigned on S3)."""


_KEY_RE = re.compile(r"^[A-Za-z0-9._/-]+$")


def check_key(key: str) -> str:
    """Refuse keys that could escape the storage root or mean different things on different
    backends: absolute, `..`/`.` segments, empty segments, backslashes, anything but [A-Za-z0-9._/-]."""
    if not key or len(key) > 512 or not _KEY_RE.match(key):
        raise StorageError(f"invalid storage key: {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid storage key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A folder of keys (`inputs/<task>`, with or without the trailing slash) as the key prefix
    it stands for (`inputs/<task>/`), refused like a key if it could mean anything else."""
    return check_key(prefix.removesuffix("/")) + "/"


def _copy_atomic(source: BinaryIO | Path, dest: Path) -> None:
    """Write to a temporary file in dest's folder, then rename over dest (same filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, Path):
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            else:
                shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage:
    """Files under `root` (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path_for(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, source: Path) -> None:
        _copy_atomic(Path(source), self.path_for(key))

    def open_read(self, key: str) -> BinaryIO:
        return self.path_for(key).open("rb")

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with self.open_read(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def iter_range(
        self, key: str, first: int, last: int, chunk_size: int = 256 * 1024
    ) -> Iterator[bytes]:
        with self.open_read(key) as f:
            f.seek(first)
            left = last - first + 1
            while left > 0 and (chunk := f.read(min(chunk_size, left))):
                left -= len(chunk)
                yield chunk

    def download_to(self, key: str, dest: Path) -> None:
        src = self.path_for(key)
        if not src.is_file():
            raise FileNotFoundError(key)
        _copy_atomic(src, Path(dest))

    def size(self, key: str) -> int:
        return self.path_for(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def list_keys(self, prefix: str) -> Iterator[str]:
        folder = self.root / check_prefix(prefix)
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.root).as_posix()

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def url_for(self, key: str, expires_s: int = 3600) -> str:
        # Only readable on this machine: fine for the simulator, not for a remote generation API.
        return self.path_for(key).as_uri()


def _is_not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return err.get("Code") in ("404", "NoSuchKey", "NotFound") or status == 404


class S3Storage:
    """An S3-compatible bucket (AWS S3, Cloudflare R2, moto in tests) through boto3.

    Credentials come the usual boto3 way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile...)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint_url = endpoint_url
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, source: Path) -> None:
        # S3 objects appear whole when the (multipart) upload completes: atomic for readers.
        try:
            self.client.upload_file(str(source), self.bucket, self._key(key))
        except (ClientError, BotoCoreError, Boto3Error) as exc:  # S3UploadFailedError is Boto3's
            raise StorageError(f"upload of {key} failed: {exc}") from exc

    def open_read(self, key: str) -> BinaryIO:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(key) from exc
            raise StorageError(f"reading {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"reading {key} failed: {exc}") from exc
        return cast(BinaryIO, obj["Body"])

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        body: Any = self.open_read(key)
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def iter_range(
        self, key: str, first: int, last: int, chunk_size: int = 256 * 1024
    ) -> Iterator[bytes]:
        try:
            obj = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={first}-{last}"
            )
        except ClientError as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(key) from exc
            raise StorageError(f"reading {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"reading {key} failed: {exc}") from exc
        body: Any = obj["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def download_to(self, key: str, dest: Path) -> None:
        body = self.open_read(key)
        try:
            _copy_atomic(body, Path(dest))
        finally:
            body.close()

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise StorageError(f"looking up {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"looking up {key} failed: {exc}") from exc

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list_keys(self, prefix: str) -> Iterator[str]:
        folder = check_prefix(prefix)
        full = f"{self.prefix}/{folder}" if self.prefix else folder
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][len(full) - len(folder) :]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"listing {folder} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if not _is_not_found(exc):
                raise StorageError(f"deleting {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"deleting {key} failed: {exc}") from exc

    def url_for(self, key: str, expires_s: int = 3600) -> str:
        try:
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=int(expires_s),
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"presigning {key} failed: {exc}") from exc


def storage_from_url(storage_url: str, endpoint_url: str | None = None) -> Storage:
    """`file:///abs/path` (or a plain path) → LocalStorage; `s3://bucket/prefix` → S3Storage."""
    parts = urlsplit(storage_url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StorageError(f"STORAGE_URL has no bucket: {storage_url!r}")
        return S3Storage(parts.netloc, unquote(parts.path).strip("/"), endpoint_url)
    if parts.scheme == "file":
        return LocalStorage(Path(unquote(parts.path)))
    if parts.scheme == "":
        return LocalStorage(Path(storage_url))
    raise StorageError(f"unsupported STORAGE_URL scheme: {parts.scheme!r}")


_cache: dict[tuple[str, str | None], Storage] = {}
_cache_lock = threading.Lock()


def get_storage() -> Storage:
    settings = get_settings()
    url = getattr(settings, "storage_url", None) or f"file://{VAR_DIR / 'storage'}"
    endpoint = getattr(settings, "s3_endpoint_url", None)
    with _cache_lock:
        storage = _cache.get((url, endpoint))
        if storage is None:
            storage = _cache[(url, endpoint)] = storage_from_url(url, endpoint)
        return storage
