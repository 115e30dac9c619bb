"""The live deployment manifest: sticky canary, shadow sampling, hot reload that rejects invalid files."""

from __future__ import annotations

import os
import time

from serving.config import CanaryRelease, Release, UseCaseDeployment
from serving.manifest import ManifestWatcher, pick_release, shadow_sampled

GOOD = """environment: local
use_cases:
  support-assistant:
    release: {name: r1, model: auto, prompt_version: v1, index_version: live}
"""


def _touch_later(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_canary_is_sticky_per_key_and_close_to_its_weight():
    dep = UseCaseDeployment(
        release=Release(name="r1", model="auto", prompt_version="v1"),
        canary=CanaryRelease(weight=0.2, release=Release(name="r2", model="auto", prompt_version="v2")),
    )
    picks = {f"key{i}": pick_release("support-assistant", dep, f"key{i}").canary for i in range(5000)}
    share = sum(picks.values()) / len(picks)
    assert 0.18 < share < 0.22
    for k in list(picks)[:200]:
        assert pick_release("support-assistant", dep, k).canary == picks[k]  # same key, same release
    assert pick_release("support-assistant", dep, "key1").release.name == ("r2" if picks["key1"] else "r1")


def test_shadow_sampling_rate():
    hits = sum(shadow_sampled(f"req_{i}", 0.25) for i in range(8000))
    assert 1800 < hits < 2200
    assert all(shadow_sampled(f"req_{i}", 1.0) for i in range(100))


def test_watcher_reloads_changes_and_keeps_the_previous_manifest_when_the_new_one_is_invalid(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(GOOD)
    known_models = {"auto", "gemma-3-270m"}

    def validate(m):
        for uc, dep in m.use_cases.items():
            if dep.release.model not in known_models:
                raise ValueError(f"use_cases.{uc}.release.model: unknown model {dep.release.model!r}")

    w = ManifestWatcher(path, validate)
    assert w.poll() is True and w.current.use_cases["support-assistant"].release.name == "r1"
    assert w.poll() is False  # unchanged file: nothing to do

    path.write_text(GOOD.replace("r1", "r2"))
    _touch_later(path)
    assert w.poll() is True and w.current.use_cases["support-assistant"].release.name == "r2"

    path.write_text(GOOD.replace("r1", "r3").replace("model: auto", "model: gpt-99"))
    _touch_later(path)
    assert w.poll() is False
    assert w.current.use_cases["support-assistant"].release.name == "r2"  # previous stays in force
    assert "gpt-99" in w.last_error and w.rejections == 1

    path.write_text("environment: local\nuse_cases: {support-assistant: {release: {name: r4}}}\n")
    _touch_later(path)
    assert w.poll() is False and "model" in w.last_error and str(path) in w.last_error

    path.write_text(GOOD.replace("r1", "r5"))
    _touch_later(path)
    assert w.poll() is True and w.last_error is None
    assert w.current.use_cases["support-assistant"].release.name == "r5"


def test_missing_manifest_is_an_error_not_a_crash(tmp_path):
    w = ManifestWatcher(tmp_path / "nope.yaml")
    assert w.poll() is False and w.current is None and "not found" in w.last_error
    (tmp_path / "nope.yaml").write_text(GOOD)
    time.sleep(0.01)
    assert w.poll() is True
