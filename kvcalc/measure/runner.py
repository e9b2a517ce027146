"""The measure command's parent side: start one worker process per rank, relay its progress, collect
its report, and turn any failure of any rank into one error, after every rank has stopped. torch-free."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kvcalc.errors import DoesNotFit, InvalidInput, KvcalcError, MeasureUnavailable
from kvcalc.measure import INSTALL_HINT, STOP_SIGNALS, looks_like_memory, torch_installed
from kvcalc.measure.calibrate import Calibration
from kvcalc.measure.launched import check_launch, launched
from kvcalc.measure.plan import MeasureRequest, check_measurable
from kvcalc.measure.report import MeasureReport, tensor_parallel_report
from kvcalc.spec import GpuSpec, ModelSpec, Workload

MAX_CPU_RANKS = 64  # CPU ranks are processes on this machine: at most 4 per core, and at most 64
STOP_GRACE_S = 5.0  # a terminated worker's time to exit before it is killed
FAILURE_GRACE_S = 2.0  # after one rank fails, how long the others may take to report their own failure


def max_cpu_ranks() -> int:
    return min(MAX_CPU_RANKS, 4 * (os.cpu_count() or 1))


def measure(
    variants: list[tuple[str, ModelSpec]],
    workload: Workload,
    device_name: str,
    max_layers: int | None,
    max_memory: int | None,
    peak: GpuSpec | None,
    progress: Callable[[str], None],
    tp: int = 1,
) -> MeasureReport | None:
    """Measure each variant on one device (or one model on `tp` tensor-parallel ranks) in worker processes;
    under torchrun, as this process's rank (None on every rank but 0, which reports for all)."""
    check_device(device_name, tp)
    launch = launched()
    if launch is not None:
        check_launch(launch, tp, len(variants))
    if tp > 1 and len(variants) > 1:
        raise InvalidInput("--tp measures one model at a time: drop --variants")
    if tp > 1 and device_name == "cpu" and tp > max_cpu_ranks():
        raise InvalidInput(
            f"--tp {tp} is more CPU ranks than this machine runs sensibly: at most {max_cpu_ranks()}"
            f" (4 per core, {MAX_CPU_RANKS} at most)"
        )
    for _, model in variants:  # bad input is found here, before any process starts
        check_measurable(model, workload.model_copy(update={"tp": tp}))
    if not torch_installed():
        raise MeasureUnavailable(INSTALL_HINT)
    request = MeasureRequest(
        variants=variants,
        workload=workload.model_copy(update={"tp": tp}),
        device=device_name,
        max_layers=max_layers,
        max_memory=max_memory,
        peak=peak,
    )
    if launch is not None:  # torchrun started this process as one rank: measure here; rank 0 reports for all
        from kvcalc.measure.worker import measure_launched

        reports = [MeasureReport.model_validate(data) for data in measure_launched(request, launch, progress)]
        if not reports:
            return None
        return reports[0] if tp == 1 else tensor_parallel_report(reports)
    try:
        reports = [MeasureReport.model_validate(data) for data in run_workers(request, progress)]
    except MemoryError:
        raise DoesNotFit("out of memory in kvcalc's own process while its measure workers ran; they were stopped") from None
    return reports[0] if tp == 1 else tensor_parallel_report(reports)


def calibrate(device_name: str, max_memory: int | None, progress: Callable[[str], None]) -> Calibration:
    """Fit the device's streaming bandwidth and overhead per decode layer in a worker process."""
    check_device(device_name, 1)
    if not torch_installed():
        raise MeasureUnavailable(INSTALL_HINT)
    request = MeasureRequest(
        variants=[],
        workload=Workload(seq=1),
        device=device_name,
        max_layers=None,
        max_memory=max_memory,
        peak=None,
        calibrate=True,
    )
    try:
        return Calibration.model_validate(run_workers(request, progress)[0])
    except MemoryError:
        raise DoesNotFit("out of memory in kvcalc's own process while its measure worker ran; it was stopped") from None


def check_device(name: str, tp: int) -> None:
    """cpu, cuda or cuda:N; tensor parallelism on CUDA takes cuda:0 to cuda:tp-1, so a bare cuda."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InvalidInput(f"unknown device {name!r}: use cpu or cuda")
    if tp > 1 and name.startswith("cuda:"):
        raise InvalidInput(f"--tp {tp} puts rank r on cuda:r: give --device cuda, not {name}")


class Worker:
    """One rank's process, the stage it last reported, and its stderr (kept in a file)."""

    def __init__(self, rank: int, request: MeasureRequest, env: dict[str, str]) -> None:
        self.rank = rank
        self.stage = "starting"
        self.report: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.pending = b""
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kvcalc.measure.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            start_new_session=True,  # a Ctrl-C reaches the parent, which stops every rank itself
        )
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(request.model_dump_json().encode())
            self.process.stdin.close()
        except BrokenPipeError:  # it died at once; its exit status tells why
            pass

    def receive(self) -> tuple[list[dict[str, Any]], bool]:
        """The whole JSON lines that arrived on its stdout (noting stage, report and error), and whether it closed."""
        assert self.process.stdout is not None
        chunk = os.read(self.process.stdout.fileno(), 1 << 16)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        messages = []
        for line in lines:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # the protocol has stdout to itself: only a crash half-way through a line writes a broken one
            self.stage = message.get("stage", self.stage)
            self.report = message.get("report", self.report)
            self.error = message.get("error", self.error)
            messages.append(message)
        return messages, not chunk

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        """Terminate the process (its memory goes with it), killing it when it does not stop in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()


def run_workers(request: MeasureRequest, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Start the ranks, relay rank 0's stages, and return every rank's report. When one fails, the
    others fail soon after (their collectives lose a peer): wait a moment for them, then stop every
    rank and raise the most telling failure, an out-of-memory one before the errors it caused.
    No threads: the parent must not need memory it may not have while its workers use it all."""
    tp = request.workload.tp
    env = worker_environment(tp)
    workers: list[Worker] = []
    failures: list[KvcalcError] = []
    deadline: float | None = None
    with _stop_workers_on_signals(), selectors.DefaultSelector() as selector:
        try:
            for rank in range(tp):
                with _stop_signals_held():
                    workers.append(Worker(rank, request, {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
                worker = workers[-1]
                selector.register(worker.process.stdout, selectors.EVENT_READ, worker)  # type: ignore[arg-type]
            while selector.get_map() and (deadline is None or time.monotonic() < deadline):
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                for key, _ in selector.select(timeout):
                    worker = key.data
                    messages, ended = worker.receive()
                    for message in messages:
                        if "stage" in message and worker.rank == 0:
                            progress(message["stage"])
                        if "error" in message:
                            failures.append(failure(worker, tp))
                    if ended:
                        selector.unregister(key.fileobj)
                        worker.process.wait()
                        if worker.report is None and worker.error is None:
                            failures.append(failure(worker, tp))
                if failures and deadline is None:
                    deadline = time.monotonic() + FAILURE_GRACE_S
            if failures:
                raise next((f for f in failures if isinstance(f, DoesNotFit)), failures[0])
            return [w.report for w in workers if w.report is not None]
        finally:
            for worker in workers:
                worker.stop()


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached the parent while its workers ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    for other in STOP_SIGNALS:  # a second signal must not interrupt the workers' cleanup
        signal.signal(other, signal.SIG_IGN)
    raise _Stopped(signum)


@contextmanager
def _stop_workers_on_signals() -> Iterator[None]:
    """While workers run, SIGTERM and SIGHUP raise _Stopped, so run_workers stops every rank (each in its own
    session, where no terminal's or shell's signal reaches it) before the parent dies of the signal, as it
    would have. A signal the caller ignores (nohup's SIGHUP) stays ignored; off the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise_stopped)
    try:
        yield
    except _Stopped as stopped:
        signal.signal(stopped.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stopped.signum)
        raise  # not reached: the default action ends the process
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler installed outside Python, which Python cannot restore
                signal.signal(signum, handler)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """SIGTERM and SIGHUP wait while a worker starts and joins the list run_workers stops: one arriving
    between its Popen and the list would orphan a running rank. The worker inherits the blocked mask and
    unblocks them first thing (kvcalc.measure.worker.main), so a signal held for it is delivered then."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def failure(worker: Worker, tp: int) -> KvcalcError:
    """The one error a failed rank makes: its own message, or what its exit status and stderr say."""
    where = f"rank {worker.rank} of {tp}: " if tp > 1 else ""
    after = "; every rank was stopped and its memory released" if tp > 1 else ""
    if worker.error is not None:
        cls = DoesNotFit if worker.error["exit_code"] == DoesNotFit.exit_code else KvcalcError
        return cls(f"{where}{worker.error['message']}{after}")
    status = worker.process.returncode
    text = worker.stderr_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if looks_like_memory(line)), lines[-1] if lines else "")
    how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
    if looks_like_memory(text) or status == -signal.SIGKILL:  # SIGKILL: what the kernel's OOM killer sends
        detail = f" ({said[:160]})" if said else ""
        return DoesNotFit(
            f"{where}out of memory while {worker.stage}: the measure worker {how}{detail}{after or '; its memory was released'}"
        )
    return KvcalcError(f"{where}the measure worker {how} while {worker.stage}" + (f": {said[:160]}" if said else "") + after)


def worker_environment(tp: int) -> dict[str, str]:
    """The parent's environment, with kvcalc importable and, for tp > 1, a rendezvous on this machine."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the kvcalc package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if tp > 1:
        env |= {"WORLD_SIZE": str(tp), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
        if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
            env["GLOO_SOCKET_IFNAME"] = "lo"  # the ranks meet on loopback, whatever the host name resolves to
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
