"""Whose job a verified dynamic delivery belongs to: ours only if its MAC says so.

A valid JWT proves that Google sent the delivery to our URL, not that we submitted the job:
every Gemini project's deliveries are signed with the same key. So once the token verified,
the job's `user_metadata` must carry a valid MAC under this receiver's job key
(`contracts.dynamic_jobs`); otherwise the delivery is `foreign_job`, and neither forwarded
nor recorded as a ping (a dynamic ping belongs to a job too). With
`accept_jobs_from_any_project` every job is accepted, as before the check existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gemini_webhooks.contracts import dynamic_jobs
from gemini_webhooks.contracts.receiver_config import DynamicConfig

from . import reasons
from .reasons import Rejection


class JobKeyUnavailable(RuntimeError):
    """The configured job key cannot be read; the message names the file, never the key."""


class JobOrigin:
    def __init__(self, key: bytes | None) -> None:
        self._key = key  # None: jobs from any project are accepted

    @classmethod
    def from_config(cls, config: DynamicConfig) -> JobOrigin:
        if config.accept_jobs_from_any_project:
            return cls(None)
        assert config.job_key_file is not None  # the config's validation guarantees one
        try:
            text = Path(config.job_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise JobKeyUnavailable(
                f"cannot read dynamic.job_key_file {config.job_key_file}: {reason}"
            ) from None
        try:
            return cls(dynamic_jobs.decode_key(text))
        except dynamic_jobs.JobKeyError as error:
            raise JobKeyUnavailable(
                f"dynamic.job_key_file {config.job_key_file}: {error}"
            ) from None

    def check(self, envelope: dict[str, Any]) -> Rejection | None:
        """None when the job is ours (or any job is accepted), else `foreign_job`."""
        if self._key is None:
            return None
        if dynamic_jobs.verify(envelope.get("user_metadata"), self._key):
            return None
        return reasons.FOREIGN_JOB
