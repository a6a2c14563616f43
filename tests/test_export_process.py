"""Where an export batch runs: a process of its own, or the thread's shared export process.

The "exporter" here is this interpreter and the export scripts are stand-ins written to
``tmp_path`` (plain python, no torch): what they write is what the test looks at. The real
exporter's models, made either way, are compared in ``test_envs_exporter.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_rknn.variants import export_process
from pytest_rknn.variants.export_process import (
    EXPORT_NICENESS,
    ExportProcessError,
    run_export_script,
    shared_exports,
)

PYTHON = Path(sys.executable)
SERVER = Path(export_process.__file__).with_name("export_server.py")
MODES = ["alone", "shared"]


def mode_block(mode: str) -> contextlib.AbstractContextManager[None]:
    return shared_exports() if mode == "shared" else contextlib.nullcontext()


def script(tmp_path: Path, name: str, body: str) -> Path:
    """A stand-in export script: ``body`` runs with ``jobs`` loaded; it then writes
    ``results`` (one per job) unless the body ended the process first."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import json, os, sys\n"
        "jobs = json.load(open(sys.argv[1]))\n"
        "results = [{} for _ in jobs]\n"
        f"{body}\n"
        "json.dump(results, open(sys.argv[2], 'w'))\n"
    )
    return path


@pytest.fixture
def whoami(tmp_path: Path) -> Path:
    """A script that reports its process, its name, its argv and what it found imported."""
    return script(
        tmp_path,
        "whoami",
        "seen = 'stand_in_heavy' in sys.modules\n"
        "sys.modules.setdefault('stand_in_heavy', sys)\n"
        "print('chatter on stdout'); print('chatter on stderr', file=sys.stderr)\n"
        "results = [dict(pid=os.getpid(), name=__name__, argv=len(sys.argv), seen=seen)"
        " for _ in jobs]",
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][0] != "Z"
    return True


def test_a_threads_batches_share_one_process_inside_the_block_only(whoami: Path) -> None:
    with shared_exports():
        first, second = (run_export_script(whoami, [{}, {}], PYTHON, 30) for _ in range(2))
    alone = run_export_script(whoami, [{}], PYTHON, 30)[0]
    assert first[0]["pid"] == second[0]["pid"] == second[1]["pid"] != alone["pid"]
    assert (first[0]["seen"], second[0]["seen"], alone["seen"]) == (False, True, False)
    assert {r["name"] for r in (*first, *second, alone)} == {"__main__"}
    assert {r["argv"] for r in (*first, *second, alone)} == {3}
    assert not alive(first[0]["pid"]), "the shared process ends with its block"


def test_another_threads_batches_run_in_processes_of_their_own(whoami: Path) -> None:
    other: list[dict] = []
    with shared_exports():
        (mine,) = run_export_script(whoami, [{}], PYTHON, 30)
        thread = threading.Thread(
            target=lambda: other.extend(run_export_script(whoami, [{}], PYTHON, 30))
        )
        thread.start()
        thread.join()
        (again,) = run_export_script(whoami, [{}], PYTHON, 30)
    assert mine["pid"] == again["pid"] != other[0]["pid"]


FAILURES = {
    "raises": ("raise ValueError('no such opset here')", "code 1: ValueError: no such opset"),
    "kills its process": (
        "print('segfault in libtorch', file=sys.stderr)\nos._exit(3)",
        "code 3: segfault in libtorch",
    ),
    "is interrupted": (
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "os.kill(os.getpid(), signal.SIGINT)",
        "code -2 (killed by signal 2): KeyboardInterrupt",
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_batch_names_its_error_and_the_next_batch_runs_afresh_if_it_must(
    tmp_path: Path, whoami: Path, mode: str, failure: str
) -> None:
    body, says = FAILURES[failure]
    failing = script(tmp_path, "fails", body)
    with mode_block(mode):
        (before,) = run_export_script(whoami, [{}], PYTHON, 30)
        with pytest.raises(ExportProcessError, match=re.escape(f"failed with {says}")):
            run_export_script(failing, [{}], PYTHON, 30)
        (after,) = run_export_script(whoami, [{}], PYTHON, 30)
    shared_survives = mode == "shared" and failure == "raises"
    assert (after["pid"] == before["pid"]) is shared_survives
    assert after["seen"] is shared_survives


@pytest.mark.parametrize("mode", MODES)
def test_an_export_batch_past_its_timeout_is_killed(
    tmp_path: Path, whoami: Path, mode: str
) -> None:
    pid_file = tmp_path / "pid"
    hang = script(
        tmp_path,
        "hang",
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\nimport time\ntime.sleep(60)",
    )
    with mode_block(mode):
        with pytest.raises(
            ExportProcessError, match=r"torch export of 1 job\(s\) timed out after 1 s"
        ):
            run_export_script(hang, [{}], PYTHON, timeout=1)
        assert not alive(int(pid_file.read_text()))
        (after,) = run_export_script(whoami, [{}], PYTHON, 30)
    assert after["argv"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_an_export_batch_runs_at_a_lower_cpu_priority(tmp_path: Path, mode: str) -> None:
    report = script(
        tmp_path,
        "report_priority",
        "import time\n"
        "parent = os.getpriority(os.PRIO_PROCESS, os.getppid())\n"
        "deadline = time.monotonic() + 5\n"
        "while os.getpriority(os.PRIO_PROCESS, 0) <= parent and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "results = [{'nice': os.getpriority(os.PRIO_PROCESS, 0)} for _ in jobs]",
    )
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with mode_block(mode):
        (result,) = run_export_script(report, [{}], PYTHON, timeout=30)
    assert result["nice"] == min(own + EXPORT_NICENESS, 19) > own or own == 19


@pytest.mark.parametrize("mode", MODES)
def test_an_export_batch_writes_bytecode_whatever_the_host_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Torch and transformers import in 13 s from source, in 4 s from the bytecode a first
    batch leaves in the exporter's environment."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "heavy.py").write_text("VALUE = 1\n")
    imports = script(
        tmp_path,
        "import_heavy",
        f"sys.path.insert(0, {str(tmp_path / 'lib')!r})\n"
        "import heavy\n"
        "results = [{'dont_write': sys.dont_write_bytecode} for _ in jobs]",
    )
    with mode_block(mode):
        (result,) = run_export_script(imports, [{}], PYTHON, timeout=30)
    assert result == {"dont_write": False}
    assert list((tmp_path / "lib" / "__pycache__").glob("heavy.*.pyc"))


@contextlib.contextmanager
def interrupted_after(seconds: float) -> Iterator[None]:
    """Raise KeyboardInterrupt in this (the main) thread after ``seconds``, as Ctrl-C would,
    by a signal of its own (SIGINT itself may be ignored in a background job)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.get_ident()
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


def test_an_interrupt_during_a_shared_batch_ends_the_shared_process(tmp_path: Path) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    pid_file = tmp_path / "pid"
    hang = script(
        tmp_path,
        "hang",
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\nimport time\ntime.sleep(60)",
    )
    with shared_exports():
        with pytest.raises(KeyboardInterrupt), interrupted_after(1.0):
            run_export_script(hang, [{}], PYTHON, timeout=30)
        assert not alive(int(pid_file.read_text())), "killed at once, not when the block ends"


def test_a_missing_interpreter_is_one_line_in_either_mode(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    for mode in MODES:
        with mode_block(mode), pytest.raises(ExportProcessError, match=r"cannot run .*no-such"):
            run_export_script(tmp_path / "x.py", [{}], missing, 30)


def test_the_results_are_read_once_the_batch_is_answered(tmp_path: Path) -> None:
    """Two jobs, the second one's result missing: the batch failed, whatever its code."""
    short = script(tmp_path, "short", "results = results[:1]")
    with shared_exports(), pytest.raises(ExportProcessError, match=r"failed with code 0"):
        run_export_script(short, [{}, {}], PYTHON, 30)


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_reads_an_empty_stdin_and_nothing_it_starts_reads_the_next_request(
    tmp_path: Path, whoami: Path, mode: str
) -> None:
    reads = script(
        tmp_path,
        "reads_stdin",
        "import subprocess\n"
        "results = [{'read': sys.stdin.read()} for _ in jobs]\n"
        f"subprocess.Popen(['sh', '-c', 'read line; echo \"$line\" > {tmp_path}/stolen'])",
    )
    with mode_block(mode):
        (result,) = run_export_script(reads, [{}], PYTHON, timeout=10)
        (after,) = run_export_script(whoami, [{}], PYTHON, timeout=10)
    assert result == {"read": ""} and after["argv"] == 3
    stolen = tmp_path / "stolen"
    assert not stolen.exists() or stolen.read_text().strip() == "", "the child read /dev/null"


def test_what_a_batch_changes_in_the_interpreter_is_undone_before_the_next(
    tmp_path: Path,
) -> None:
    meddles = script(
        tmp_path,
        "meddles",
        "import signal, warnings\n"
        f"os.chdir({str(tmp_path)!r}); os.environ['MEDDLED'] = '1'; sys.path.insert(0, 'x')\n"
        "warnings.filterwarnings('ignore'); signal.alarm(1)\n"
        "sys.stdout = open(os.devnull, 'w')",
    )
    reports = script(
        tmp_path,
        "reports_state",
        "import time, warnings\n"
        "time.sleep(1.5)\n"
        "print('to the log')\n"
        "results = [dict(cwd=os.getcwd(), env='MEDDLED' in os.environ, path=sys.path[0],"
        " filters=len(warnings.filters)) for _ in jobs]",
    )
    with shared_exports():
        (fresh,) = run_export_script(reports, [{}], PYTHON, timeout=10)
        run_export_script(meddles, [{}], PYTHON, timeout=10)
        (after,) = run_export_script(reports, [{}], PYTHON, timeout=10)
    assert after == fresh and after["cwd"] != str(tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_an_odd_ending_is_still_a_one_line_error_within_the_timeout(
    tmp_path: Path, mode: str
) -> None:
    cases = {
        "sys.exit('fatal: no opset 99')": "failed with code 1: fatal: no opset 99",
        "results = [1, 2]": "failed with code 0",
        "sys.stdout.buffer.write(bytes([255, 10])); raise ValueError('odd')": "ValueError: odd",
    }
    with mode_block(mode):
        for body, says in cases.items():
            odd = script(tmp_path, "odd", body)
            with pytest.raises(ExportProcessError, match=re.escape(says)):
                run_export_script(odd, [{}], PYTHON, timeout=10)


@pytest.mark.parametrize("mode", MODES)
def test_a_program_the_batch_leaves_running_does_not_hold_up_its_answer(
    tmp_path: Path, mode: str
) -> None:
    leaves = script(
        tmp_path, "leaves", "import subprocess\nchild = subprocess.Popen(['sleep', '30'])"
    )
    with mode_block(mode):
        (result,) = run_export_script(leaves, [{}], PYTHON, timeout=5)
    assert result == {}


def test_a_server_that_answers_garbage_is_ended_and_named(tmp_path: Path) -> None:
    odd = tmp_path / "odd-python"
    odd.write_text("#!/bin/sh\nread line\necho '{\"code\": Infinity}'\nexec sleep 60\n")
    odd.chmod(0o755)
    with shared_exports(), pytest.raises(ExportProcessError, match=r"failed with code None"):
        run_export_script(tmp_path / "x.py", [{}], odd, timeout=10)


def test_the_shared_process_ends_mid_batch_when_the_host_hangs_up(tmp_path: Path) -> None:
    """The host killed in the middle of a batch (its end of the requests closes): the server
    ends at once, its batch with it, rather than export on for nobody with no timeout."""
    started = tmp_path / "started"
    hangs = script(
        tmp_path, "hangs", f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(60)"
    )
    server = subprocess.Popen(
        [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert server.stdin is not None and server.stdout is not None
    jobs = tmp_path / "jobs.json"
    jobs.write_text("[{}]")
    request = {"script": str(hangs), "argv": [str(jobs), str(tmp_path / "r")], "log": "/dev/null"}
    server.stdin.write(json.dumps(request).encode() + b"\n")
    server.stdin.flush()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), "the batch never started"
    server.stdin.close()
    try:
        code = server.wait(10)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    assert code == 3


def test_the_shared_process_ends_cleanly_when_stopped_between_batches(tmp_path: Path) -> None:
    quick = script(tmp_path, "quick", "")
    jobs = tmp_path / "jobs.json"
    jobs.write_text("[{}]")
    request = {"script": str(quick), "argv": [str(jobs), str(tmp_path / "r")], "log": "/dev/null"}
    codes = []
    for _ in range(3):
        server = subprocess.Popen(
            [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps(request).encode() + b"\n")
        server.stdin.flush()
        assert json.loads(server.stdout.readline()) == {"code": 0}
        server.stdin.close()
        codes.append(server.wait(10))
        server.stdout.close()
    assert codes == [0, 0, 0]
