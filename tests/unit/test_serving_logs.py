"""The request log: buffered appends flushed within the interval, rotation, owner-only files, the content policy."""

from __future__ import annotations

import hashlib
import os
import stat
import time

import pytest

from serving.logs import LOG_HMAC_ENV, ContentPolicy, JsonlLog, LogKeyMissing, read_records

KEY = "k" * 32


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_records_reach_disk_within_the_flush_interval_and_at_close(tmp_path):
    log = JsonlLog(tmp_path, "requests", flush_interval_s=0.2)
    try:
        for i in range(5):
            log.append({"request_id": f"req_{i}", "status": 200})
        deadline = time.monotonic() + 2
        while len(read_records(tmp_path, "requests")) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["request_id"] for r in read_records(tmp_path, "requests")] == [f"req_{i}" for i in range(5)]
        log.append({"request_id": "req_last"})
    finally:
        log.close()
    assert read_records(tmp_path, "requests")[-1]["request_id"] == "req_last"


def test_files_rotate_by_size_and_are_never_rewritten(tmp_path):
    log = JsonlLog(tmp_path, "requests", flush_interval_s=60, rotate_bytes=200)
    for i in range(30):
        log.append({"request_id": f"req_{i:03d}", "pad": "x" * 40})
        log.flush()
    log.close()
    files = sorted((tmp_path / "requests").glob("requests-*.jsonl"))
    assert len(files) > 5
    assert [r["request_id"] for r in read_records(tmp_path, "requests")] == [f"req_{i:03d}" for i in range(30)]


def test_log_folders_and_files_are_owner_only_and_loose_ones_are_tightened(tmp_path):
    old = tmp_path / "logs" / "requests"
    old.mkdir(parents=True, mode=0o755)
    os.chmod(tmp_path / "logs", 0o755)
    os.chmod(old, 0o755)
    earlier = old / "requests-20260101T000000000000Z-1.jsonl"
    earlier.write_text('{"request_id": "req_old"}\n')
    os.chmod(earlier, 0o644)
    log = JsonlLog(tmp_path / "logs", "requests", flush_interval_s=60)
    log.append({"request_id": "req_new"})
    log.flush()
    log.close()
    assert mode(tmp_path / "logs") == 0o700 and mode(old) == 0o700
    assert mode(earlier) == 0o600
    assert mode(log.current_path) == 0o600
    fresh = JsonlLog(tmp_path / "new" / "logs", "feedback", flush_interval_s=60)
    fresh.append({"x": 1})
    fresh.flush()
    fresh.close()
    assert mode(tmp_path / "new" / "logs") == 0o700 and mode(tmp_path / "new" / "logs" / "feedback") == 0o700
    assert mode(fresh.current_path) == 0o600


def test_redacted_and_none_policies():
    assert ContentPolicy("redacted")("my <EMAIL_ADDRESS_1>") == "my <EMAIL_ADDRESS_1>"
    assert ContentPolicy("none")("abc") is None and ContentPolicy("redacted")(None) is None


def test_hashed_policy_is_a_keyed_hmac_that_a_bare_sha256_of_a_guess_does_not_match():
    policy = ContentPolicy.from_environment("hashed", {LOG_HMAC_ENV: KEY})
    digest = policy("yes")
    assert digest.startswith("hmac-sha256:") and len(digest) == len("hmac-sha256:") + 64
    assert digest == policy("yes")  # stable: the same question can still be counted and joined
    assert digest.split(":")[1] != hashlib.sha256(b"yes").hexdigest()  # guessing short texts needs the key
    other = ContentPolicy.from_environment("hashed", {LOG_HMAC_ENV: "o" * 32})
    assert other("yes") != digest


@pytest.mark.parametrize("value", [None, "", "short"])
def test_hashed_policy_without_a_long_enough_key_refuses_to_start(value):
    env = {} if value is None else {LOG_HMAC_ENV: value}
    with pytest.raises(LogKeyMissing, match=LOG_HMAC_ENV):
        ContentPolicy.from_environment("hashed", env)
    assert ContentPolicy.from_environment("redacted", env)("a") == "a"  # only 'hashed' needs the key
