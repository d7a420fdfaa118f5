from __future__ import annotations

import threading

from dockvols_common.locks import NamedLocks

WAIT = 5.0  # upper bound for things that must happen; never reached when all is well
BLOCKED = 0.2  # how long a blocked thread gets to (wrongly) get through


def _run(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_one_name_is_held_by_one_thread_at_a_time():
    locks = NamedLocks()
    a_inside, b_trying, b_inside = threading.Event(), threading.Event(), threading.Event()
    b_got_in_while_a_held = []

    def a():
        with locks.hold("db@ds1"):
            a_inside.set()
            assert b_trying.wait(WAIT)
            b_got_in_while_a_held.append(b_inside.wait(BLOCKED))

    def b():
        assert a_inside.wait(WAIT)
        b_trying.set()
        with locks.hold("db@ds1"):
            b_inside.set()

    threads = [_run(a), _run(b)]
    for t in threads:
        t.join(WAIT)
    assert b_got_in_while_a_held == [False]
    assert b_inside.is_set()  # and B did get in once A let go


def test_two_names_run_in_parallel():
    locks = NamedLocks()
    a_inside, b_inside = threading.Event(), threading.Event()
    seen = []

    def a():
        with locks.hold("one"):
            a_inside.set()
            seen.append(b_inside.wait(WAIT))  # B must get in while A still holds "one"

    def b():
        assert a_inside.wait(WAIT)
        with locks.hold("two"):
            b_inside.set()

    threads = [_run(a), _run(b)]
    for t in threads:
        t.join(WAIT)
    assert seen == [True]


def test_a_lock_is_released_when_the_body_raises():
    locks = NamedLocks()
    try:
        with locks.hold("db"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    got = []
    thread = _run(lambda: got.append(locks.hold("db").__enter__() is None))
    thread.join(WAIT)
    assert got == [True]


def test_locks_nobody_holds_are_dropped():
    locks = NamedLocks()
    with locks.hold("a"), locks.hold("b"):
        assert len(locks) == 2
    assert len(locks) == 0


def test_a_waiting_thread_keeps_the_lock_alive_until_it_is_done():
    locks = NamedLocks()
    a_inside, b_done = threading.Event(), threading.Event()
    release_a = threading.Event()

    def a():
        with locks.hold("x"):
            a_inside.set()
            assert release_a.wait(WAIT)

    def b():
        assert a_inside.wait(WAIT)
        with locks.hold("x"):
            pass
        b_done.set()

    threads = [_run(a), _run(b)]
    assert a_inside.wait(WAIT)
    release_a.set()
    for t in threads:
        t.join(WAIT)
    assert b_done.is_set()
    assert len(locks) == 0
