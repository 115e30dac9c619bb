"""The live deployment manifest: which release serves each use case, reloaded without a restart.

``ManifestWatcher.poll()`` (called by the gateway about once a second) re-reads the file when its modification
time or size changed. A manifest that does not parse, does not validate, or names a model, prompt version or
index version that does not exist is rejected: the error is logged and kept for /readyz, and the previous
manifest stays in force. The canary is sticky per key: a key either always or never gets it for a given canary
release (a hash of key id, use case and canary name against the weight), so a user's conversation never flips.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agenix_assets.core.config import ConfigError, load_yaml_model
from agenix_assets.sandbox import assert_writable

from .config import DeploymentManifest, Release, UseCaseDeployment

log = logging.getLogger("agenix.gateway.manifest")


@dataclass(frozen=True)
class ReleaseChoice:
    release: Release
    canary: bool


def pick_release(use_case: str, deployment: UseCaseDeployment, key_id: str) -> ReleaseChoice:
    canary = deployment.canary
    if canary is not None and canary.weight > 0:
        digest = hashlib.sha1(f"{key_id}\0{use_case}\0{canary.release.name}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < canary.weight:
            return ReleaseChoice(canary.release, True)
    return ReleaseChoice(deployment.release, False)


def shadow_sampled(request_id: str, rate: float) -> bool:
    if rate >= 1:
        return True
    digest = hashlib.sha1(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def write_manifest(path: Path, manifest: DeploymentManifest) -> Path:
    """Replace a deployment manifest atomically (a watcher reads the old file or the new one, never half of it).
    From a sandbox only the sandbox's own manifest: production's raises SandboxViolation."""
    import os

    import yaml

    path = assert_writable(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_none=True), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


class ManifestWatcher:
    def __init__(self, path: Path, validate: Callable[[DeploymentManifest], None] | None = None,
                 fallback: Path | None = None):
        # ``path`` is where the deployer writes; ``fallback`` (config's shipped manifest) is read while it is absent.
        self.deployed = Path(path)
        self.fallback = Path(fallback) if fallback else None
        self.path = self.deployed
        self.validate = validate
        self.current: DeploymentManifest | None = None
        self.sha: str | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.rejections = 0
        self._stamp: tuple[int, int, str] | None = None

    def retry(self) -> None:
        """Read the file again at the next poll even if it did not change (what it names may exist now)."""
        self._stamp, self.sha = None, None

    def poll(self) -> bool:
        """Reload if the file changed; True when a new manifest came into force."""
        if self.fallback is not None:
            self.path = self.deployed if self.deployed.exists() or not self.fallback.exists() else self.fallback
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, str(self.path))
        except FileNotFoundError:
            stamp = (-1, -1, str(self.path))
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            if stamp[0] == -1:
                raise ConfigError(f"{self.path}: deployment manifest not found")
            data = self.path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()[:16]
            if sha == self.sha:
                return False
            manifest = load_yaml_model(self.path, DeploymentManifest)
            if self.validate is not None:
                self.validate(manifest)
        except (ConfigError, ValueError, OSError, LookupError) as exc:
            self.rejections += 1
            self.last_error = f"{exc}"
            state = "no manifest in force" if self.current is None else f"manifest {self.sha} stays in force"
            log.error("rejected deployment manifest %s: %s (%s)", self.path, exc, state)
            return False
        self.current, self.sha, self.last_error = manifest, sha, None
        self.reloads += 1
        log.info("deployment manifest %s in force (sha %s)", self.path, sha)
        return True
