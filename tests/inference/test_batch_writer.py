"""BatchWriter: one write at a time on its own thread, in order, errors back to the caller."""

import threading
import time

import pytest

from inference.batch_writer import BatchWriter


def test_the_write_runs_on_another_thread_while_the_caller_goes_on():
    release = threading.Event()
    threads = []

    def write():
        threads.append(threading.current_thread())
        release.wait(5)
        return "written"

    with BatchWriter() as writer:
        assert writer.idle
        writer.submit("batch-1", write)
        assert not writer.idle
        # The caller is not blocked by the write (it would prepare the next batch here).
        release.set()
        assert writer.result() == ("batch-1", "written")
        assert writer.idle
        assert writer.result() is None  # nothing in flight
    assert threads
    assert threads[0] is not threading.current_thread()


def test_one_batch_at_a_time_and_results_in_order():
    order = []
    with BatchWriter() as writer:
        for i in range(5):
            writer.submit(i, lambda i=i: order.append(i) or i * 10)
            with pytest.raises(RuntimeError, match="still being written"):
                writer.submit(99, lambda: None)
            assert writer.result() == (i, i * 10)
    assert order == [0, 1, 2, 3, 4]


def test_an_error_in_the_write_is_raised_by_result_and_a_give_up_is_none():
    def failing():
        msg = "broker gone"
        raise ConnectionError(msg)

    with BatchWriter() as writer:
        writer.submit("b", failing)
        with pytest.raises(ConnectionError, match="broker gone"):
            writer.result()
        assert writer.idle
        writer.submit("c", lambda: None)  # the write gave up (stop during an outage)
        assert writer.result() == ("c", None)


def _fail_while_writing(stuck: threading.Event) -> None:
    with BatchWriter() as writer:
        writer.submit("b", lambda: stuck.wait(30))
        msg = "worker failed"
        raise KeyError(msg)


def test_leaving_on_an_error_does_not_wait_for_a_write_stuck_in_an_outage():
    stuck = threading.Event()
    started = time.monotonic()
    with pytest.raises(KeyError):
        _fail_while_writing(stuck)
    assert time.monotonic() - started < 5
    stuck.set()
