"""A real one-node Slurm cluster on localhost for the tests of the Slurm backend: Debian's
slurm-wlm and munge (installed by .ci/slurm-deps.sh), started by the session fixture `slurm` from
a slurm.conf it writes into a temporary folder, and stopped at the end of the session.

munged runs as the `munge` user with its socket in that folder; slurmctld and slurmd run as
root in the foreground (`-D`), each in its own process group, on free TCP ports, so two test
sessions on one machine get two independent clusters. Accounting is off: a job's exit code is
read with `scontrol show job` (ExitCode=CODE:SIGNAL) while slurmctld still holds the job
(MinJobAge=300 keeps finished jobs for five minutes).

The fixture changes no variable of the test process: pass `slurm.env` to every subprocess
(Slurm commands, or `torchjob run --backend slurm`). Without root, munge or Slurm the tests
that use it are skipped with the reason; under CI=true that is a failure.

Use it from a test module with `pytest_plugins = ["tests.slurm"]` (or from conftest.py)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import Daemon, unavailable, wait_until

CLUSTER = "torchjob-test"
PARTITION = "debug"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_USER = "munge"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
# Where Debian puts them; added to PATH so a PATH without the sbin folders still finds them.
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
READY_TIMEOUT = 30.0  # for each daemon; the whole start takes about a second here
STOP_TIMEOUT = 10.0
# Job states after which a job never runs again (`scontrol show job` JobState).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
# Variables an outer Slurm job or a user's shell may set that would change what sbatch, srun
# or squeue do here (SLURM_JOB_ID makes srun join that job; SBATCH_PARTITION picks another).
_INHERITED_PREFIXES = (
    "SLURM_",
    "SBATCH_",
    "SRUN_",
    "SALLOC_",
    "SQUEUE_",
    "SINFO_",
    "SCANCEL_",
    "SCONTROL_",
)

SLURM_CONF = """\
# Written by tests/slurm.py: a one-node cluster for the tests, everything in {state}
ClusterName={cluster}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120 s, two
# minutes of test_slurm_signal's requeue test); steps still have 20 s to launch.
AuthInfo=socket={state}/munge/munge.socket,cred_expire=20
CredType=cred/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/run/slurmctld.pid
SlurmdPidFile={state}/run/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# Batch jobs start at the next scheduler pass (about 1 s), not up to 3 s (the default delay).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Take the CPUs and memory below as given, even where the machine reports fewer (a one-CPU
# runner still gets two slots, so a 2-task job can run).
SlurmdParameters=config_overrides
ReturnToService=2
# Refuse at submission what can never run here (more nodes or CPUs than the partition has),
# with Slurm's message, instead of accepting it to pend forever (Reason=PartitionConfig).
EnforcePartLimits=ALL
# Finished jobs stay in slurmctld (scontrol show job: JobState, ExitCode) for 5 minutes.
MinJobAge=300
# scancel and time limits: SIGTERM, then SIGKILL 5 s later (default 30 s).
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus}{memory} State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SlurmStartError(RuntimeError):
    """The cluster did not come up; the message carries the daemons' last log lines."""


@dataclass(frozen=True)
class Slurm:
    """A running one-node cluster. `env` is what to pass to subprocesses."""

    state_dir: Path  # the temporary folder: slurm.conf, log/, ctld/, spool/, munge/, run/
    conf: Path  # its slurm.conf (SLURM_CONF)
    partition: str  # "debug", the default partition
    node: str  # the node's name: the short host name
    cpus: int  # the node's CPUs, at least 2
    path: str = field(repr=False)  # PATH with the Slurm commands on it
    startup_seconds: float = 0.0  # from munged's start to a first job that ran

    @property
    def env(self) -> dict[str, str]:
        """The current environment (so a test's own HOME and TORCHJOB_HOME pass through) with
        SLURM_CONF pointing at this cluster, PATH holding the Slurm commands, and no inherited
        SLURM_*/SBATCH_*/SRUN_* variable. Computed at each access; the fixture never changes
        os.environ."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        env.update(self.vars)
        return env

    @property
    def vars(self) -> dict[str, str]:
        """Only the two variables the cluster needs, for monkeypatch.setenv or env.update."""
        return {"SLURM_CONF": str(self.conf), "PATH": self.path}

    def log(self, name: str) -> str:
        """The log of "slurmctld", "slurmd" (the daemons' log files; slurmstepd writes into
        slurmd's) or "munged"; "slurmctld.stderr"/"slurmd.stderr" hold what the daemons wrote
        to stderr (the same lines, and errors from before the log file was opened)."""
        path = self.state_dir / "log" / (name if "." in name else f"{name}.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def run(
        self, *argv: str, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (sbatch, squeue, ...) against this cluster; text output."""
        return subprocess.run(
            list(argv),
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol -o show job ID` as a dict (JobState, ExitCode "3:0", StdOut, ...); empty
        when slurmctld no longer knows the job."""
        done = self.run("scontrol", "-o", "show", "job", job_id, timeout=30)
        if done.returncode != 0:
            return {}
        return parse_scontrol(done.stdout)

    def wait_job(
        self, job_id: str, timeout: float = 30, states: Collection[str] = FINAL_STATES
    ) -> dict[str, str]:
        """Poll `scontrol show job` until the job is in one of `states` (by default a final
        one); return its fields."""
        seen: list[dict[str, str]] = [{}]

        def in_state() -> dict[str, str] | None:
            seen[0] = self.job(job_id)
            return seen[0] if seen[0].get("JobState") in states else None

        return wait_until(
            in_state, timeout, lambda: f"job {job_id} to reach {sorted(states)}: {seen[0]}"
        )

    def jobs(self) -> list[str]:
        """Ids of the jobs not finished yet (pending, running, completing)."""
        done = self.run("squeue", "-h", "-o", "%i", timeout=30)
        return done.stdout.split() if done.returncode == 0 else []

    def cancel_all(self, timeout: float = 15) -> None:
        """scancel every job not finished, and wait until none is left (not even COMPLETING):
        for a test's cleanup, so a job it leaves behind cannot hold the node's CPUs."""
        ids = self.jobs()
        if ids:
            self.run("scancel", *ids, timeout=30)
            wait_until(lambda: not self.jobs(), timeout, f"jobs {ids} to leave squeue")


def parse_scontrol(text: str) -> dict[str, str]:
    """KEY=VALUE pairs of `scontrol -o show ...` (keys may hold ':' and '/', e.g. CPUs/Task)."""
    pairs = re.split(r"\s+(?=[A-Za-z][\w:/]*=)", text.strip())
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


# ---------------------------------------------------------------- daemons


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _daemon(
    name: str,
    argv: list[str],
    log: Path,
    env: Mapping[str, str],
    user: pwd.struct_passwd | None = None,
) -> Daemon:
    """A daemon in the foreground, its output appended to `log` in the state folder."""
    return Daemon(argv, env=env, log=log, user=user, name=name, stop_timeout=STOP_TIMEOUT)


def _wait(what: str, check: Callable[[], bool], daemons: list[Daemon]) -> None:
    """Poll `check` until it holds; fail at once when a daemon exits, or at the deadline."""

    def ready() -> bool:
        if check():
            return True
        dead = [d for d in daemons if not d.alive()]
        if dead:
            raise _start_error(
                what, f"{dead[0].name} exited with {dead[0].proc.returncode}", daemons
            )
        return False

    try:
        wait_until(ready, READY_TIMEOUT, what)
    except pytest.fail.Exception:
        raise _start_error(what, f"not ready after {READY_TIMEOUT:.0f} s", daemons) from None


def _start_error(what: str, why: str, daemons: list[Daemon]) -> SlurmStartError:
    logs = "\n".join(f"--- {d.name} ({d.log}):\n{d.tail()}" for d in daemons)
    return SlurmStartError(f"{what}: {why}\n{logs}")


def _munge_ready(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def _node_idle(env: Mapping[str, str], partition: str) -> bool:
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-p", partition, "-o", "%T"],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=15,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and done.stdout.split() == ["idle"]


def _job_state(env: Mapping[str, str], job_id: str) -> str | None:
    try:
        done = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=15,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return parse_scontrol(done.stdout).get("JobState") if done.returncode == 0 else None


def _real_memory(path: str) -> int | None:
    """RealMemory (MB) as slurmd itself counts it (`slurmd -C`), or None when it cannot say."""
    try:
        done = subprocess.run(
            ["slurmd", "-C"],
            env={"PATH": path},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\bRealMemory=(\d+)", done.stdout)
    return int(found.group(1)) if found else None


def _problems(path: str) -> str | None:
    """Why this machine cannot run the cluster, or None."""
    missing = [t for t in (*DAEMONS, *CLIENTS) if shutil.which(t, path=path) is None]
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}): run .ci/slurm-deps.sh"
    if os.geteuid() != 0:
        return "the slurm fixture needs root (slurmd runs jobs as their user; munged as munge)"
    try:
        user = pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return "no `munge` user: run .ci/slurm-deps.sh"
    if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_uid != user.pw_uid:
        return f"{MUNGE_KEY} missing or not owned by munge: run .ci/slurm-deps.sh"
    return None


def _sweep(conf: Path) -> None:
    """SIGKILL what is left of this cluster's jobs after its daemons stopped: processes whose
    environment names this cluster's slurm.conf and a job (SLURM_JOB_ID), or slurmstepd with
    this slurm.conf. Clients (a shell with SLURM_CONF, sbatch) are left alone."""
    marker = f"SLURM_CONF={conf}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
            stepd = (entry / "comm").read_text().strip() == "slurmstepd"
        except OSError:
            continue
        in_job = stepd or any(v.startswith(b"SLURM_JOB_ID=") for v in variables)
        if marker in variables and in_job:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


class _Cluster:
    """Starts and stops the daemons of one cluster in `state`."""

    def __init__(self, state: Path, path: str) -> None:
        self.state = state
        self.path = path
        self.node = socket.gethostname().split(".")[0]
        self.cpus = max(2, len(os.sched_getaffinity(0)))
        self.conf = state / "slurm.conf"
        self.munged: Daemon | None = None
        self.slurm: list[Daemon] = []

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": self.path, "SLURM_CONF": str(self.conf), "LANG": "C.UTF-8"}

    def start(self) -> Slurm:
        started = time.monotonic()
        munge = pwd.getpwnam(MUNGE_USER)
        for sub in ("log", "ctld", "spool", "run"):
            (self.state / sub).mkdir()
        # munged refuses a socket folder that others cannot enter, or that it does not own.
        munge_dir = self.state / "munge"
        munge_dir.mkdir(mode=0o755)
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        sock = munge_dir / "munge.socket"
        self.munged = _daemon(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={sock}",
                f"--key-file={MUNGE_KEY}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            self.state / "log" / "munged.log",
            {"PATH": self.path},
            user=munge,
        )
        _wait("munged", lambda: _munge_ready(sock), [self.munged])
        memory = _real_memory(self.path)
        errors = []
        for _ in range(3):  # a port taken between _free_port() and the bind: try other ports
            self._write_conf(memory)
            try:
                self._start_slurm()
                break
            except SlurmStartError as e:
                self._stop_slurm()
                errors.append(str(e))
                if "in use" not in str(e):
                    raise
        else:
            raise SlurmStartError("\n".join(errors))
        return Slurm(
            self.state,
            self.conf,
            PARTITION,
            self.node,
            self.cpus,
            self.path,
            time.monotonic() - started,
        )

    def _write_conf(self, memory: int | None) -> None:
        self.conf.write_text(
            SLURM_CONF.format(
                state=self.state,
                cluster=CLUSTER,
                node=self.node,
                cpus=self.cpus,
                memory=f" RealMemory={memory}" if memory else "",
                partition=PARTITION,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
            )
        )

    def _start_slurm(self) -> None:
        log = self.state / "log"
        ctld = _daemon("slurmctld", ["slurmctld", "-D", "-i"], log / "slurmctld.stderr", self.env)
        self.slurm.append(ctld)
        slurmd = _daemon("slurmd", ["slurmd", "-D"], log / "slurmd.stderr", self.env)
        self.slurm.append(slurmd)
        assert self.munged is not None
        daemons = [self.munged, ctld, slurmd]
        _wait("slurm (sinfo: node idle)", lambda: _node_idle(self.env, PARTITION), daemons)
        # Idle is not yet ready: slurmctld's first scheduling pass comes about 2 s after its
        # start, and a first job would wait for it (`sbatch --wait` of a 1 s job would then
        # return after 10 s). A probe job that runs to the end proves the whole path: munge
        # credentials, the scheduler, slurmd and slurmstepd.
        done = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--job-name=torchjob-probe",
                "--output=/dev/null",
                "--wrap=true",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=self.state,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise SlurmStartError(f"probe job refused: {done.stderr.strip()}")
        probe = done.stdout.strip().split(";")[0]
        _wait(
            f"slurm (probe job {probe} completed)",
            lambda: _job_state(self.env, probe) == "COMPLETED",
            daemons,
        )

    def _cancel_jobs(self) -> None:
        """scancel every job and wait (bounded) until slurmctld has none left running."""
        env = self.env

        def queued() -> list[str]:
            try:
                done = subprocess.run(
                    ["squeue", "-h", "-o", "%i"],
                    env=env,
                    text=True,
                    capture_output=True,
                    timeout=15,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return []
            return done.stdout.split() if done.returncode == 0 else []

        ids = queued()
        if not ids:
            return
        subprocess.run(["scancel", *ids], env=env, capture_output=True, timeout=15, check=False)
        with contextlib.suppress(pytest.fail.Exception):  # bounded: the daemons stop anyway
            wait_until(lambda: not queued(), 15, "the jobs to leave squeue")  # KillWait is 5 s

    def _stop_slurm(self) -> None:
        for daemon in reversed(self.slurm):  # slurmd first: no node to start new steps on
            daemon.stop()
        self.slurm.clear()

    def stop(self) -> None:
        if self.slurm and all(d.alive() for d in self.slurm):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._cancel_jobs()
        self._stop_slurm()
        if self.munged is not None:
            self.munged.stop()
            self.munged = None
        _sweep(self.conf)


def _search_path() -> str:
    """PATH of the test process, with the system folders the Slurm commands live in."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join([*parts, *(d for d in SYSTEM_DIRS if d not in parts)])


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A one-node cluster for the whole session; see the module's docstring."""
    path = _search_path()
    problem = _problems(path)
    if problem:
        unavailable(problem, ".ci/slurm-deps.sh")
    # Not pytest's tmp folder: munged (user munge) must reach its socket folder, and that one
    # is 0700 root. A short path also keeps slurmd's unix sockets under the 108-byte limit.
    state = Path(tempfile.mkdtemp(prefix="torchjob-slurm-"))
    state.chmod(0o755)
    cluster = _Cluster(state, path)
    try:
        try:
            info = cluster.start()
        except (SlurmStartError, OSError, subprocess.SubprocessError) as e:
            unavailable(f"Slurm did not start: {e}", ".ci/slurm-deps.sh")
        yield info
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
