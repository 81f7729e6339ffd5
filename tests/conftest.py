"""Test-wide settings: never reach a model hub; keep torch to the machine's two cores."""

import os

os.environ.setdefault("FOVEA_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# as `import fovea` does for users (it comes too late here, after torch): OpenMP threads sleep while
# waiting instead of spinning against whatever else runs on the machine (benchmarks/threads.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the predict thread governor would change the thread count with whatever else runs, and float sums with it;
# tests want the same numbers every run (tests/engine/test_thread_governor.py tests the adaptive policy itself)
os.environ.setdefault("FOVEA_THREAD_POLICY", "fixed")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


# Set FOVEA_TEST_CPU_LOG=FILE to record each test's process CPU seconds (robust to a busy machine):
# the suite's budget is judged on CPU time, since wall time depends on whatever else runs.
_cpu_log = os.environ.get("FOVEA_TEST_CPU_LOG")
if _cpu_log:
    import time

    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        t0 = time.process_time()
        yield
        with open(_cpu_log, "a") as fh:
            fh.write(f"{time.process_time() - t0:.2f}\t{item.nodeid}\n")
