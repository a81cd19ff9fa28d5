"""Waiting on state another thread changes (a server's queue, a scheduler's steps), bounded in time."""

import time


def wait_for(predicate, timeout=20.0):
    """Whether `predicate()` became true within `timeout` seconds (polled every 20 ms)."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False
