"""Builds the process's parts from settings: engine, transport, detector, metrics."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from agpt.connections import kafka_security
from agpt.prestart import database
from agpt.settings import Settings, SettingsError
from inference.images import ImageLimits
from inference.model.interface import Detector
from inference.profiles import (
    COMMITTED_CPU_DELTA,
    AnomalyGPTProfile,
    OfficialFiles,
    Profile,
    build_anomalygpt_detector,
    build_cpu_anomalygpt_detector,
    build_detector,
    get_profile,
)
from inference.worker import WorkerConfig
from ingest.blobstore import BlobStore, BlobStoreError, open_blob_store
from ingest.transport.base import Transport

__all__ = ["configure_logging", "configure_torch", "cpu_llm_detector", "database", "detector",
           "model_profile", "official_files", "transport", "worker_config"]


def configure_logging(level: str = "INFO") -> None:
    """Plain timestamped logs on stderr; no library progress bars (offline, log-friendly)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def configure_torch(settings: Settings) -> None:
    """Apply the thread setting before any model runs."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def transport(settings: Settings) -> Transport:
    """Kafka when a bootstrap is configured, else the in-process bus."""
    if settings.kafka_bootstrap:
        from ingest.transport.kafka import KafkaConfig, KafkaTransport

        return KafkaTransport(KafkaConfig(
            bootstrap=settings.kafka_bootstrap, client_id=settings.worker_id,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            security=kafka_security(settings),
            group_instance_id=settings.kafka_group_instance_id))
    from ingest.transport.memory import InProcessBroker

    return InProcessBroker()


# Setting (environment variable) that names each official file of the anomalygpt-7b profile.
OFFICIAL_SETTINGS = {
    "imagebind": ("imagebind_checkpoint", "AGPT_IMAGEBIND_CHECKPOINT"),
    "llm": ("llm_dir", "AGPT_LLM_DIR"),
    "pandagpt": ("pandagpt_checkpoint", "AGPT_PANDAGPT_CHECKPOINT"),
    "anomalygpt": ("anomalygpt_checkpoint", "AGPT_ANOMALYGPT_CHECKPOINT"),
}


def official_files(settings: Settings) -> OfficialFiles:
    """The four official checkpoint paths from the settings.

    Raises:
        SettingsError: naming every missing setting and every path that does not exist.
    """
    paths = {key: getattr(settings, field) for key, (field, _) in OFFICIAL_SETTINGS.items()}
    missing = [env for key, (_, env) in OFFICIAL_SETTINGS.items() if paths[key] is None]
    if missing:
        msg = (f"profile {settings.profile!r} loads the official AnomalyGPT files: set "
               f"{', '.join(missing)}")
        raise SettingsError(msg)
    absent = [f"{env}={paths[key]}" for key, (_, env) in OFFICIAL_SETTINGS.items()
              if not paths[key].exists()]
    if absent:
        msg = f"official AnomalyGPT files not found: {', '.join(absent)}"
        raise SettingsError(msg)
    return OfficialFiles(**paths)


def model_profile(settings: Settings) -> Profile | AnomalyGPTProfile:
    """The profile named by the settings.

    Raises:
        SettingsError: An unknown profile name (the known ones listed).
    """
    try:
        return get_profile(settings.profile)
    except ValueError as exc:
        msg = f"AGPT_PROFILE / --profile: {exc}"
        raise SettingsError(msg) from exc


def detector(settings: Settings, *, image_size: int | None = None) -> Detector:
    """The configured model profile on the configured device.

    cpu-small: the LLM of the CPU composition with `AGPT_CPU_DELTA`, else with the committed
    delta (`AGPT_CPU_VERDICT=llm`, the default: it beat the calibrated threshold on held-out
    products), else (and at any size but 224 px) the calibrated threshold.

    Raises:
        SettingsError: an LLM profile without its files, or an input size it cannot take.
    """
    profile = model_profile(settings)
    if isinstance(profile, AnomalyGPTProfile):
        if image_size not in (None, profile.detector.image_size):
            msg = f"profile {profile.name!r} works at {profile.detector.image_size} px only"
            raise SettingsError(msg)
        return build_anomalygpt_detector(profile, official_files(settings),
                                         device=settings.device, dtype=settings.dtype)
    if settings.cpu_delta is not None:
        return cpu_llm_detector(settings, profile, image_size=image_size)
    if (settings.cpu_verdict == "llm" and image_size in (None, 224)
            and profile.detector.image_size == 224 and COMMITTED_CPU_DELTA.is_file()):
        return cpu_llm_detector(settings, profile, delta=COMMITTED_CPU_DELTA)
    return build_detector(profile, cache_dir=settings.cache_dir,
                          device=settings.device, image_size=image_size,
                          stream_window=settings.stream_window)


def cpu_llm_detector(settings: Settings, profile: Profile, *, image_size: int | None = None,
                     delta: Path | None = None) -> Detector:
    """The CPU profile's LLM composition with ``delta``, default ``AGPT_CPU_DELTA``'s.

    Raises:
        SettingsError: the delta file is missing, or the profile/size cannot take it.
    """
    delta = delta or settings.cpu_delta
    if delta is None or not delta.is_file():
        msg = f"AGPT_CPU_DELTA={delta}: no such file"
        raise SettingsError(msg)
    if image_size not in (None, 224) or profile.detector.image_size != 224:
        msg = f"AGPT_CPU_DELTA: the LLM composition works at 224 px, not with {profile.name!r}"
        raise SettingsError(msg)
    return build_cpu_anomalygpt_detector(profile, delta=delta, cache_dir=settings.cache_dir,
                                         device=settings.device,
                                         stream_window=settings.stream_window)


def blob_store(settings: Settings, *, default: str | None = "var/blobs") -> BlobStore | None:
    """The blob store of ``AGPT_BLOB_STORE`` (+ ``AGPT_S3_*``), else ``default`` (None: none).

    Raises:
        SettingsError: an unsupported location.
    """
    location = settings.blob_store or default
    if location is None:
        return None
    try:
        return open_blob_store(
            location, read_timeout_s=settings.blob_read_timeout_s,
            endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key)
    except BlobStoreError as exc:
        raise SettingsError(str(exc)) from exc


def worker_config(settings: Settings) -> WorkerConfig:
    """Worker settings from the service settings."""
    return WorkerConfig(
        frames_topic=settings.frames_topic,
        verdicts_topic=settings.verdicts_topic,
        dlq_topic=settings.dlq_topic,
        worker_id=settings.worker_id,
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        latency_slo_ms=settings.latency_slo_ms or None,
        limits=ImageLimits(max_bytes=settings.max_image_bytes,
                           max_pixels=settings.max_image_pixels),
        freeze_heap=True,
    )
