"""Typed settings for every agpt process, read once by the CLI (``AGPT_*`` env + flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.topics import (
    CONSUMER_GROUP,
    DLQ_TOPIC,
    FRAMES_TOPIC,
    MESSAGE_VALUE_LIMIT,
    POOL_TOPIC,
    VERDICTS_TOPIC,
)
from storage.engine import DEFAULT_DATABASE_URL


class SettingsError(ValueError):
    """A setting the chosen profile needs is missing or wrong (the CLI prints it, exit 2)."""


def load_settings(**overrides: object) -> Settings:
    """The settings from ``AGPT_*`` variables, with the given non-None overrides (flags).

    Raises:
        SettingsError: naming every setting whose value is invalid.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"AGPT_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors())
        msg = f"invalid setting: {problems}"
        raise SettingsError(msg) from exc


def default_cache_dir() -> Path:
    """Where converted model weights are cached (``AGPT_CACHE_DIR`` overrides)."""
    return Path.home() / ".cache" / "agpt"


class RetentionPolicy(BaseModel):
    """How long one product keeps what (days from the frame's arrival; None = forever).

    Pool images are never deleted, nor anything of a flagged frame not yet reviewed.
    """

    normal_image_days: float | None = Field(default=7, ge=0)
    flagged_image_days: float | None = Field(
        default=90, ge=0, description="Images of flagged frames, only once reviewed.")
    verdict_days: float | None = Field(
        default=365, ge=0, description="Whole frames: verdict, review trail, chat.")


class Settings(BaseSettings):
    """All configuration of the service, in one place.

    Every field can be set from the environment as ``AGPT_<FIELD>`` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix="AGPT_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL; postgresql+psycopg://user@host/db for production.",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port]; None selects the in-process transport.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        description="Longest the broker may hold a consumer's fetch that found nothing new; "
        "a frame arriving meanwhile can wait for it on brokers that answer late (Tansu), so "
        "lower values trade idle fetch requests for latency (20: ~25 ms off the p50 of a "
        "busy worker on Tansu against 100, at ~5 % of a core more while idle; see "
        "ingest.transport.kafka.KafkaConfig).",
    )
    frames_topic: str = FRAMES_TOPIC
    verdicts_topic: str = VERDICTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    pool_topic: str = POOL_TOPIC
    consumer_group: str = CONSUMER_GROUP

    profile: str = Field(default="cpu-small",
                         description="Model profile: cpu-small, cpu-small-448, anomalygpt-7b.")
    # The anomalygpt-7b profile's four official files (none ships with agpt).
    imagebind_checkpoint: Path | None = Field(default=None, description="imagebind_huge.pth")
    llm_dir: Path | None = Field(default=None,
                                 description="Vicuna-7B v0 Hugging Face directory")
    pandagpt_checkpoint: Path | None = Field(default=None,
                                             description="PandaGPT delta pytorch_model.pt")
    anomalygpt_checkpoint: Path | None = Field(
        default=None, description="AnomalyGPT delta pytorch_model.pt")
    cpu_delta: Path | None = Field(
        default=None,
        description="cpu-small only: an official-layout AnomalyGPT delta trained for DINOv2-S + "
        "SmolLM2-135M (`agpt train`); when set its LLM gives the verdict. Unset: see "
        "cpu_verdict.")
    cpu_verdict: Literal["llm", "threshold"] = Field(
        default="llm",
        description="cpu-small without AGPT_CPU_DELTA: 'llm' = the committed delta's LLM "
        "(`make train-small`; its verdict beat the calibrated threshold on held-out products) "
        "gives the verdict, 'threshold' = the calibrated threshold. Profiles at other sizes "
        "(cpu-small-448) keep the threshold: the composition reads 224 px maps.")
    dtype: str | None = Field(
        default=None, description="Weight dtype of LLM profiles: float16, bfloat16, float32; "
        "None = the profile's (float16).")
    stream_window: int | None = Field(
        default=None, ge=0,
        description="Few-shot profiles: recent frames per product the worker keeps as a stream "
        "memory (0 = off); None = the profile's default.")
    cache_dir: Path = Field(default_factory=default_cache_dir)
    device: str = "cpu"
    torch_threads: int | None = Field(
        default=None, description="torch intra-op threads; None = all cores."
    )

    batch_size: int = 8
    batch_wait_ms: int = 50
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000

    blob_store: str | None = Field(
        default=None,
        description="Blob store of frame images: a directory, file:// URI or "
        "s3://bucket/prefix every worker and the dashboard can read. Ingest puts claim checks "
        "there (None refuses images above claim_check_bytes); workers keep frame images there "
        "(None: workers use var/blobs). Workers read a frame's image_uri only from inside it.",
    )
    blob_read_timeout_s: float = Field(
        default=10.0, description="Longest a worker waits to read one local blob (a hung "
        "share); a timeout pauses the batch like a store outage.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, Ceph, ...); None = AWS.")
    s3_region: str | None = Field(default=None, description="S3 region; None = us-east-1.")
    s3_access_key_id: str | None = Field(
        default=None, description="None = boto3's default chain (AWS_* env, profile, role).")
    s3_secret_access_key: str | None = None
    claim_check_bytes: int = Field(
        default=MESSAGE_VALUE_LIMIT,
        description="Images larger than this travel through the blob store, not the message "
        "(keep below the broker's message.max.bytes, 1 MiB by default).",
    )

    retention_default: RetentionPolicy = Field(
        default_factory=RetentionPolicy,
        description='JSON, e.g. {"normal_image_days": 7, "flagged_image_days": 90, '
        '"verdict_days": 365}; null days = keep forever.')
    retention_products: dict[str, RetentionPolicy] = Field(
        default_factory=dict,
        description='Per-product policies as JSON: {"bottle": {"normal_image_days": 1}}.')
    retention_batch_size: int = Field(default=500, ge=1, le=100_000,
                                      description="Frames per retention transaction.")

    latency_slo_ms: float = Field(
        default=250.0,
        description="Capture→verdict target of the worker: batches are sized from what is "
        "waiting and the measured per-frame cost so that frames stay under it while the "
        "load allows; batch_size stays the upper bound.")
    health_host: str = Field(
        default="127.0.0.1",
        description="Interface the worker's /healthz, /readyz and /metrics bind to: loopback "
        "for local runs; 0.0.0.0 in a container whose probes and scraper come from outside.")
    stall_timeout_s: float = Field(
        default=300.0,
        description="/healthz fails when the consume loop has held a batch this long without "
        "progress (a blocked read, a hung model); above the slowest batch the model takes.")
    kafka_group_instance_id: str | None = Field(
        default=None,
        description="Static group membership (KIP-345): a stable id unique to this worker in "
        "the group, that it comes back under after a restart (e.g. the StatefulSet pod name): "
        "a restarted worker takes its partitions back without a rebalance. None: dynamic "
        "membership. On Tansu see the README (neither mode is safe from its stale-leader bug).")

    dashboard_port: int = 8501
    assistant_url: str = Field(
        default="http://127.0.0.1:8502",
        description="Where the dashboard reaches `agpt assistant` (chat, pool announcements).")
    assistant_host: str = Field(
        default="127.0.0.1",
        description="Bind address of `agpt assistant`; 0.0.0.0 serves other hosts (it has "
        "no login of its own: keep it on a private network).")
    assistant_port: int = 8502
    worker_id: str = Field(default="worker-0")

    # Security of the connections (README "Deploy"): secrets come from mounted files.
    database_password_file: Path | None = Field(
        default=None, description="File holding the database password (a mounted secret); "
        "replaces any password in database_url.")
    database_sslmode: str | None = Field(
        default=None, description="libpq sslmode: disable, allow, prefer, require, verify-ca, "
        "verify-full (verify-full checks the server certificate and host name).")
    database_sslrootcert: Path | None = Field(
        default=None, description="CA bundle (PEM) that signs the server certificate.")
    database_sslcert: Path | None = Field(
        default=None, description="Client certificate (PEM) for certificate authentication.")
    database_sslkey: Path | None = Field(default=None,
                                         description="Private key of database_sslcert.")
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols).")
    kafka_sasl_username: str | None = None
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="File holding the SASL password (a mounted secret).")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) that signs the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(default=None,
                                           description="Private key of kafka_ssl_certfile.")
    kafka_ssl_check_hostname: bool = True
