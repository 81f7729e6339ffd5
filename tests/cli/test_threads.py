"""Thread policy (issue 12): OpenMP threads sleep while waiting unless the user chose otherwise,
and `fovea --threads N` sets the intra-op threads of whatever command runs."""

import os
import subprocess
import sys

CHECK = "import fovea, os, torch; print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())"


def _run(code: str, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "FOVEA_THREADS")}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.split()


def test_import_sets_passive_wait_policy_unless_one_is_set():
    assert _run(CHECK)[0] == "PASSIVE"
    assert _run(CHECK, OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"


def test_threads_option_and_env_reach_torch():
    code = ("import sys, torch; from fovea.cli.main import main; rc = main(sys.argv[1:]); "
            "print(rc, torch.get_num_threads())")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FOVEA_THREADS")}
    n = str((os.cpu_count() or 1) + 1)  # not torch's default on any machine
    out = subprocess.run([sys.executable, "-c", code, "--threads", n, "synth", "--help"], env=base,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["0", n]
    out = subprocess.run([sys.executable, "-c", code, "synth", "--help"], env={**base, "FOVEA_THREADS": n},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["0", n]


def test_threads_option_refuses_zero():
    from click.testing import CliRunner

    from fovea.cli.main import cli

    res = CliRunner().invoke(cli, ["--threads", "0", "synth", "--help"])
    assert res.exit_code != 0 and "--threads" in res.output


def test_thread_policy_and_cap_reach_the_predict_governor():
    code = ("import sys; from fovea.cli.main import main; rc = main(sys.argv[1:]); "
            "from fovea.engine.threads import governor; g = governor(); print(rc, g.adaptive, g.cap)")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FOVEA_THREADS", "FOVEA_THREAD_POLICY")}
    out = subprocess.run([sys.executable, "-c", code, "--threads", "3", "--thread-policy", "fixed", "synth", "--help"],
                         env=base, capture_output=True, text=True, check=True).stdout.split()
    assert out[-3:] == ["0", "False", "3"]
    out = subprocess.run([sys.executable, "-c", code, "synth", "--help"], env=base, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-3:] == ["0", "True", "None"]  # adaptive by default; the cap is read from torch at the first batch
