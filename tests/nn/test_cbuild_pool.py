"""fovea.nn._cbuild.thread_pool: one pool per kernel family, grown on demand, new after fork()."""

import os
import signal

from fovea.nn._cbuild import thread_pool


def test_pool_is_shared_grows_and_survives_fork():
    a = thread_pool("test-family", 2)
    assert thread_pool("test-family", 1) is a and thread_pool("test-family", 2) is a
    assert a.submit(lambda: 7).result() == 7
    bigger = thread_pool("test-family", 3)
    assert bigger is not a and bigger._max_workers >= 3
    assert thread_pool("other-family", 2) is not bigger
    pid = os.fork()
    if pid == 0:  # the inherited pool has no threads; the child must get a working one
        signal.alarm(20)
        ok = thread_pool("test-family", 3).submit(lambda: 41 + 1).result() == 42
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
