"""A fast writer and a slow vault: the cache never holds more unsent parts than it may."""

from __future__ import annotations

import threading

from .conftest import PART, payload


def test_writer_waits_for_room_and_all_data_arrives(make_fs):
    rig = make_fs(cache_parts=2, latency_ms=200)
    limit = rig.config.size
    data = payload(10 * PART, 111)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rig.cache.reserved)
            done.wait(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        rig.store(b"/big", data)
    finally:
        done.set()
        sampler.join()

    assert len(samples) > 10
    assert max(samples) <= limit
    assert max(samples) >= PART  # it did hold parts on the way
    assert rig.cache.reserved == 0
    rig.assert_archive(b"/big", data)
    ops = rig.upload_ops()
    assert (ops["InitiateMultipartUpload"], ops["UploadMultipartPart"],
            ops["CompleteMultipartUpload"]) == (1, 10, 1)
