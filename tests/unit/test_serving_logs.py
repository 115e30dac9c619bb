"""The request log: buffered appends flushed within the interval, rotation, the content policy."""

from __future__ import annotations

import time

from serving.logs import JsonlLog, content_for_log, read_records


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


def test_content_policy():
    assert content_for_log("my <EMAIL_ADDRESS_1>", "redacted") == "my <EMAIL_ADDRESS_1>"
    hashed = content_for_log("abc", "hashed")
    assert hashed.startswith("sha256:") and "abc" not in hashed[7:] and len(hashed) == 7 + 64
    assert content_for_log("abc", "none") is None and content_for_log(None, "redacted") is None
