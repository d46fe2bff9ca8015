"""One storage interface for the lake, two backends: a local folder (embedded default) and S3 (boto3;
AWS, MinIO or any S3 API endpoint). Keys are '/'-separated paths relative to the lake root, e.g.
'marts/recommendations/ds=2026-11-22/_manifest.json' — the same layout on both backends."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb


class Storage:
    """Backend-neutral operations the platform needs; keys never start with '/'."""

    def put_bytes(self, key: str, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def put_file(self, key: str, local_path: Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:  # pragma: no cover - interface
        """Raises FileNotFoundError naming the key when it does not exist."""
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:  # pragma: no cover - interface
        """Every key under prefix (recursive), sorted."""
        raise NotImplementedError

    def delete_keys(self, keys: Iterable[str]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def uri(self, key: str) -> str:  # pragma: no cover - interface
        """Where a reader (DuckDB, Spark, a person) finds the key."""
        raise NotImplementedError

    def configure_duckdb(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make uri(...) readable from this DuckDB connection."""

    # Composite operations, shared by both backends.
    def exists(self, key: str) -> bool:
        try:
            self.get_bytes(key)
        except FileNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> None:
        self.delete_keys(self.list_keys(prefix))

    def upload_tree(self, local_dir: Path, prefix: str) -> list[str]:
        """Mirror local_dir to prefix: upload every file, then delete keys under prefix that are not in
        local_dir (so a rerun replaces the folder rather than mixing old and new files)."""
        prefix = prefix.rstrip("/") + "/"
        uploaded = []
        for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            key = prefix + path.relative_to(local_dir).as_posix()
            self.put_file(key, path)
            uploaded.append(key)
        stale = set(self.list_keys(prefix)) - set(uploaded)
        self.delete_keys(sorted(stale))
        return uploaded

    def download_tree(self, prefix: str, local_dir: Path) -> list[Path]:
        """Every key under prefix, to the same relative path under local_dir. A key that would land outside
        local_dir (`..`, an absolute part) stops the download naming the key: nothing is written for it."""
        prefix = prefix.rstrip("/") + "/"
        root = Path(local_dir).resolve()
        written = []
        for key in self.list_keys(prefix):
            relative = key[len(prefix) :]
            target = (root / relative).resolve()
            if relative.startswith("/") or ".." in Path(relative).parts or not target.is_relative_to(root):
                raise ValueError(f"object key {key!r} points outside {root} (a '..' or absolute part): not downloaded")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.get_bytes(key))
            written.append(target)
        return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class LocalStorage(Storage):
    """A lake folder. Files are written to a temporary name then renamed (readers never see half a file);
    their mode is `file_mode` when given (e.g. 0o640), else what the umask gives a new file (0644 for 022),
    so other users and BI services can read the lake as they can any file."""

    def __init__(self, root: str | os.PathLike, file_mode: int | None = None):
        self.root = Path(root).resolve()
        self.file_mode = file_mode

    def _publish(self, tmp: str, target: Path) -> None:
        # mkstemp creates 0600 files: give the final file the lake's mode before it becomes visible
        os.chmod(tmp, self.file_mode if self.file_mode is not None else 0o666 & ~_umask())
        os.replace(tmp, target)

    def path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        self._publish(tmp, target)

    def put_file(self, key: str, local_path: Path) -> None:
        target = self.path(key)
        if Path(local_path).resolve() == target.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(local_path, tmp)
        self._publish(tmp, target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(f"not in the lake: {self.uri(key)}") from None

    def list_keys(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(self.path(key))


class S3Storage(Storage):
    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str = "us-east-1", client=None
    ):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, local_path: Path) -> None:
        self.client.upload_file(str(local_path), self.bucket, self._key(key))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"not in the lake: {self.uri(key)}") from None

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 1000):  # the S3 API deletes at most 1000 keys per call
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def configure_duckdb(self, con: duckdb.DuckDBPyConnection) -> None:
        import duckdb_extensions

        # the httpfs extension ships as a PyPI package: no download at run time
        duckdb_extensions.import_extension("httpfs", con=con)
        con.execute("LOAD httpfs")
        credentials = self.client._request_signer._credentials  # resolved by boto3's usual chain
        options = {"TYPE": "s3", "REGION": self.region}
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options.update(KEY_ID=frozen.access_key, SECRET=frozen.secret_key)
            if frozen.token:
                options["SESSION_TOKEN"] = frozen.token
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            options.update(ENDPOINT=host.rstrip("/"), URL_STYLE="path", USE_SSL=str(scheme == "https").lower())
        body = ", ".join(f"{k} {v}" if k in ("TYPE", "USE_SSL") else f"{k} '{v}'" for k, v in options.items())
        con.execute(f"CREATE OR REPLACE SECRET lake_s3 ({body})")


def storage_from_config(config: Mapping, reader: bool = False) -> Storage:
    """The lake of the configuration. On S3, the Airflow connection `lake.s3.connection` (an Amazon Web Services
    connection: login = access key id, password = secret; extra endpoint_url, region_name, aws_session_token) gives
    the credentials and may set the endpoint and region; without it, boto3's usual chain (AWS_* variables, the
    instance role). `reader` = for `pm query`: the connection `lake.s3.query_connection`, a user that may only read
    the published prefixes (docker-compose.yml creates one), when it exists."""
    from precision_marketing.config.connections import airflow_connection

    lake = config["lake"]
    if lake["backend"] == "s3":
        import boto3

        s3 = lake["s3"]
        endpoint_url, region = s3.get("endpoint_url"), s3.get("region") or "us-east-1"
        client = None
        connection = airflow_connection(s3.get("query_connection")) if reader else None
        connection = connection or airflow_connection(s3.get("connection"))
        if connection is not None:
            extra = connection.extra_dejson
            service = (extra.get("service_config") or {}).get("s3") or {}
            endpoint_url = extra.get("endpoint_url") or service.get("endpoint_url") or endpoint_url
            region = extra.get("region_name") or region
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=connection.login or None,
                aws_secret_access_key=connection.password or None,
                aws_session_token=extra.get("aws_session_token"),
            )
        return S3Storage(
            bucket=s3["bucket"], prefix=s3.get("prefix") or "", endpoint_url=endpoint_url, region=region, client=client
        )
    mode = lake.get("file_mode")
    return LocalStorage(lake["local_root"], file_mode=int(str(mode), 8) if mode else None)
