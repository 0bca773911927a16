"""The S3 source (AWS, MinIO, SeaweedFS): a model is a key prefix holding `metadata.json` and the artifact.

    s3://BUCKET/PREFIX/metadata.json         the same fields as the local store's metadata
    s3://BUCKET/PREFIX/<artifact_name>       the artifact bytes (checked against metadata.sha256)

Settings come from the `s3` section, else boto3's own chain (AWS_* variables, a profile). boto3 is
imported here only, so `mlops --help` never loads it; without it the hint names the pip extra.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, NotFoundError, StageFailed, TemporaryError, UsageError
from . import ModelRef, missing_client
from .metadata import ModelMetadata, ModuleFile, invalid_metadata

METADATA_FILE = "metadata.json"
DENIED = {
    "AccessDenied",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "403",
    "Forbidden",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
}


class NoSuchBucket(NotFoundError):
    """The bucket itself does not exist (as opposed to a key in it)."""


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    bucket, _, key = url[len("s3://") :].partition("/")
    if not url.startswith("s3://") or not bucket or not key:
        raise UsageError(f"{url!r} is not an S3 URL", hint="expected s3://BUCKET/KEY")
    return bucket, key


class S3Client:
    """A boto3 client from the `s3` settings whose failures are one-line errors naming the object."""

    def __init__(self, cfg: Any):
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound
        except ImportError:
            raise missing_client("boto3", "s3") from None
        self._errors = (ClientError, BotoCoreError)
        self._client_error = ClientError
        self.endpoint = cfg.endpoint_url or "AWS S3"
        try:
            session = boto3.session.Session(profile_name=cfg.profile) if cfg.profile else boto3.session.Session()
        except ProfileNotFound:
            raise ConfigError(f"s3.profile: AWS profile {cfg.profile!r} not found") from None
        secret = cfg.secret_access_key.get_secret_value() if cfg.secret_access_key is not None else None
        if (cfg.access_key_id is None) != (secret is None):
            raise ConfigError("s3.access_key_id and s3.secret_access_key go together: set both or neither")
        self.client = session.client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            region_name=cfg.region or session.region_name or "us-east-1",
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=secret,
            verify=cfg.verify_tls,
            config=Config(
                s3={"addressing_style": cfg.addressing_style},
                retries={"max_attempts": cfg.retries + 1, "mode": "standard"},
                connect_timeout=cfg.timeout_s,
                read_timeout=cfg.timeout_s,
            ),
        )

    def _fail(self, exc: Exception, bucket: str, key: str) -> Exception:
        where = f"s3://{bucket}/{key}"
        if isinstance(exc, self._client_error):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return NoSuchBucket(f"S3 bucket {bucket!r} does not exist at {self.endpoint}")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return NotFoundError(f"{where} not found at {self.endpoint}")
            if code in DENIED or status == 403:
                return ConfigError(
                    f"access denied to {where} at {self.endpoint} ({code or status})",
                    hint="check the S3 credentials (s3.* settings, AWS_* variables or the profile)",
                )
            if status and status >= 500:
                return TemporaryError(f"S3 at {self.endpoint} failed on {where}: {code or status}")
            return StageFailed(f"S3 refused {where}: {code or status}")
        name = type(exc).__name__
        if name == "NoCredentialsError":
            return ConfigError(
                f"no S3 credentials to read {where}",
                hint="set s3.access_key_id and MLOPS_S3__SECRET_ACCESS_KEY, AWS_* variables or s3.profile",
            )
        return TemporaryError(f"S3 at {self.endpoint} unreachable reading {where}: {exc}")

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self._errors as exc:
            raise self._fail(exc, bucket, key) from None

    def download(self, bucket: str, key: str, dest: Path) -> Path:
        """Stream the object to dest through a temp file: a failed download leaves nothing behind."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    fh.write(chunk)
            os.replace(tmp, dest)
        except self._errors as exc:
            raise self._fail(exc, bucket, key) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return dest

    def keys(self, bucket: str, prefix: str, limit: int = 20) -> list[str]:
        try:
            found = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=limit)
        except self._errors as exc:
            raise self._fail(exc, bucket, prefix) from None
        return [item["Key"] for item in found.get("Contents", [])]


class S3Source:
    """The ModelSource over an S3 prefix."""

    def __init__(self, settings: Any):
        self.settings = settings
        self._client: S3Client | None = None

    @property
    def s3(self) -> S3Client:
        if self._client is None:
            self._client = S3Client(self.settings.s3)
        return self._client

    def fetch_metadata(self, ref: ModelRef) -> ModelMetadata:
        bucket, _, prefix = ref.name.partition("/")
        try:
            raw = self.s3.read(bucket, f"{prefix}/{METADATA_FILE}")
        except NoSuchBucket:
            raise
        except NotFoundError:
            present = self.s3.keys(bucket, prefix + "/")
            what = f"holds {', '.join(k.rsplit('/', 1)[-1] for k in present[:5])}" if present else "is empty"
            raise NotFoundError(
                f"model {ref}: no {METADATA_FILE} under it at {self.s3.endpoint} (the prefix {what})",
                hint=f"upload the artifact and a {METADATA_FILE} with the local store's fields",
            ) from None
        try:
            meta = ModelMetadata.model_validate_json(raw)
        except ValidationError as exc:
            raise StageFailed(f"{ref}/{METADATA_FILE} is invalid: {invalid_metadata(exc)}") from None
        meta._ref = ref.name
        return meta

    def fetch_artifact(self, meta: ModelMetadata, dest_dir: Path) -> Path:
        ref = self._ref_of(meta)
        bucket, _, prefix = ref.partition("/")
        name = Path(meta.artifact_name).name
        if name != meta.artifact_name or name in ("", ".", "..", METADATA_FILE):
            raise StageFailed(f"artifact_name {meta.artifact_name!r} of {ref} is not a plain file name")
        try:
            return self.s3.download(bucket, f"{prefix}/{name}", Path(dest_dir) / name)
        except NoSuchBucket:
            raise
        except NotFoundError:
            raise StageFailed(
                f"model s3://{ref} has no file: s3://{ref}/{name} not found at {self.s3.endpoint}"
            ) from None

    def fetch_module(self, meta: ModelMetadata, file: ModuleFile, dest: Path) -> Path:
        """A module file lives under the model's prefix: s3://BUCKET/PREFIX/<file>."""
        ref = self._ref_of(meta)
        bucket, _, prefix = ref.partition("/")
        if "://" in file.file:
            raise StageFailed(f"module file {file.file!r} of s3://{ref}: name a file under the prefix, not a URL")
        try:
            return self.s3.download(bucket, f"{prefix}/{file.file}", dest)
        except NoSuchBucket:
            raise
        except NotFoundError:
            raise StageFailed(
                f"module file s3://{ref}/{file.file} of model s3://{ref} not found at {self.s3.endpoint}"
            ) from None

    @staticmethod
    def _ref_of(meta: ModelMetadata) -> str:
        if not meta._ref:
            raise StageFailed(f"model {meta.name}@{meta.version} was not fetched from S3")
        return meta._ref

    def write_back(
        self, ref: ModelRef, *, add_tags: list[str], remove_tags: list[str], metadata: dict[str, str]
    ) -> bool:
        """An S3 prefix's metadata.json is what was validated: it is not rewritten; the state file records."""
        return False

    def tagged(self, tag: str) -> list[ModelRef]:
        return []  # no tags are written here
