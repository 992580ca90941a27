"""The Ray worker's mailbox (``cluster_worker.Channel``) as plain Python, without Ray: messages
come out in the order they were numbered whatever order they arrive in, and a long poll for the
flags answers as soon as they change."""

from __future__ import annotations

import threading
import time

from resnet_viz.background.cluster_worker import Channel


def test_messages_come_out_in_their_order_whatever_order_they_arrive_in() -> None:
    ch = Channel(False, False)
    ch.put(1, ("progress", 0.5))
    assert ch.take(0) == [] and ch.received() == 0  # number 0 is not there yet: nothing after a gap
    ch.put(0, ("progress", 0.1))
    ch.put(3, ("end", 7))
    assert ch.take(0) == [("progress", 0.1), ("progress", 0.5)] and ch.received() == 2
    ch.put(2, ("file", "metrics.jsonl", 0, b"x"))
    assert ch.take(0) == [("progress", 0.1), ("progress", 0.5), ("file", "metrics.jsonl", 0, b"x"), ("end", 7)]
    assert ch.take(3) == [("end", 7)] and ch.take(3) == [("end", 7)]  # asked again: the same answer
    assert ch.take(4) == [] and ch.received() == 4


def test_the_flags_poll_answers_at_once_without_known_and_on_a_change_with_it() -> None:
    ch = Channel(False, True)
    assert ch.flags() == (False, True)
    t0 = time.monotonic()
    assert ch.flags((False, True), wait_s=0.2) == (False, True)  # no change: after the wait
    assert time.monotonic() - t0 >= 0.19
    answer: list[tuple[bool, bool]] = []
    poll = threading.Thread(target=lambda: answer.append(ch.flags((False, True), wait_s=30)))
    poll.start()
    time.sleep(0.1)
    ch.set_flags(True, True)
    poll.join(5)
    assert answer == [(True, True)]  # the stop, long before the 30 s
    assert ch.flags((False, False), wait_s=30) == (True, True)  # already different: no wait
