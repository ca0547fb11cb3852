"""``prefetch.ahead``: the next key's value is made on a background thread while the caller works."""

import threading

import pytest

from chimera_trainer.prefetch import ahead


@pytest.mark.parametrize("enabled", [True, False])
def test_every_key_comes_once_in_order_with_its_value(enabled):
    assert list(ahead(lambda k: k * k, range(5), enabled)) == [(k, k * k) for k in range(5)]
    assert list(ahead(lambda k: k, [], enabled)) == []


def test_the_next_value_is_made_while_the_caller_holds_the_current_one():
    second_started = threading.Event()
    threads = {}

    def make(key):
        threads[key] = threading.current_thread()
        if key == 2:
            second_started.set()
        return key

    for key, _ in ahead(make, [1, 2, 3]):
        if key == 1:  # still inside step 1: only a background thread can have started key 2
            assert second_started.wait(timeout=10)
    assert all(t is not threading.current_thread() for t in threads.values())


def test_without_prefetch_nothing_runs_ahead():
    made = []
    for key, _ in ahead(made.append, [1, 2, 3], enabled=False):
        assert made == [1, 2, 3][:key]


def test_an_error_in_make_reaches_the_caller_at_its_key():
    def make(key):
        if key == 3:
            raise ValueError("bad batch 3")
        return key

    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for key, value in ahead(make, range(1, 6)):
            got.append(value)
    assert got == [1, 2]


def test_a_caller_that_stops_early_leaves_no_work_running():
    made = []
    values = ahead(lambda k: made.append(k) or k, range(100))
    for key, _ in values:
        if key == 2:
            break
    values.close()  # what leaving the loop does once the generator is collected
    assert made == [0, 1, 2, 3]  # one key ahead at most, and the pool shut down
