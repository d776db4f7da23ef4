"""A throw-away single-node SLURM cluster for the test suite.

The suite needs a *real* scheduler to check what generated training projects do
under SLURM (requeue, signals, multi-task steps).  This module installs
Debian's SLURM packages when they are missing and runs ``munged``,
``slurmctld`` and ``slurmd`` as plain child processes whose state, sockets,
pid files and logs all live in one temporary directory.  Nothing depends on
systemd or on the system-wide ``/etc/slurm`` and ``/etc/munge`` configuration.

Typical use::

    reason = ensure_slurm_installed()
    if reason is None:
        with SlurmCluster(tmp_dir) as cluster:
            job_id = cluster.submit(["--wrap", "echo hi"])
            cluster.wait_for_state(job_id, {"COMPLETED"}, timeout=30)

Facts about this setup that the tests rely on (SLURM 22.05, Debian 12):

* Clients find the cluster only through ``SLURM_CONF``; :attr:`SlurmCluster.env`
  carries it, and ``sbatch`` exports it into jobs so ``srun``/``scontrol``
  inside a batch script reach the same controller.
* The munge socket is not at its default path; ``AuthInfo=socket=...`` in
  ``slurm.conf`` tells every SLURM component where it is.
* A requeued job is held for ``cred_expire`` seconds (``AuthInfo`` option,
  minimum 5) before it may start again; with ``cred_expire=5`` and a 2 s
  scheduler interval a requeued job runs again within about 10 s.
* There is no accounting database: query jobs with ``scontrol show job``,
  not ``sacct``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

#: Executables that must exist for a cluster to start.
REQUIRED_EXECUTABLES = ("sbatch", "slurmctld", "slurmd", "munged")
#: Debian packages providing :data:`REQUIRED_EXECUTABLES`.
DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
#: Daemons live in sbin, which is not always on a non-login PATH.
_EXTRA_BIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
#: Serialises installation between concurrent pytest(-xdist) processes, since
#: two simultaneous ``apt-get install`` runs fail on the dpkg lock.
_INSTALL_LOCK = Path("/tmp/scaffold-slurm-install.lock")

#: Longest usable Unix socket path (``sun_path`` is 108 bytes incl. NUL).
_MAX_SOCKET_PATH = 100

#: Job states after which a job will not run again by itself.
TERMINAL_STATES = frozenset(
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


class SlurmError(RuntimeError):
    """The cluster could not be started or a client command failed."""


# --------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------


def find_executable(name: str) -> str | None:
    """Return the full path of ``name`` on PATH or in an sbin directory."""
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    return shutil.which(name, path=search_path)


def _missing_executables() -> list[str]:
    return [name for name in REQUIRED_EXECUTABLES if find_executable(name) is None]


def _apt_get(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, check=False
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def ensure_slurm_installed() -> str | None:
    """Make sure SLURM and munge are installed, installing them with apt.

    Returns ``None`` when everything is available (this is a few ``which``
    look-ups when already installed), otherwise a one-line reason why SLURM
    cannot be used.  Root is required even when installed: the test cluster
    runs its daemons as ``SlurmUser=root``.
    """
    if os.geteuid() != 0:
        return "not running as root (the test cluster's daemons need root)"
    if not _missing_executables():
        return None
    if shutil.which("apt-get") is None:
        return f"missing {', '.join(_missing_executables())} and no apt-get"
    with _INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another process may have installed the packages while we waited.
        if not _missing_executables():
            return None
        install = ["install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]
        result = _apt_get(install)
        if result.returncode != 0:
            # Package lists are absent or stale: refresh them only now, since
            # `apt-get update` is the slow, network-heavy part.
            update = _apt_get(["update"])
            if update.returncode != 0:
                return f"apt-get update failed: {_last_line(update.stderr)}"
            result = _apt_get(install)
        if result.returncode != 0:
            return f"apt-get install failed: {_last_line(result.stderr)}"
    missing = _missing_executables()
    if missing:
        return f"installed packages but still missing {', '.join(missing)}"
    return None


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _short_hostname() -> str:
    """The name ``slurmd`` uses for itself (``hostname -s``)."""
    return socket.gethostname().split(".")[0]


def _node_definition(slurmd: str, node_name: str) -> str:
    """Return a ``NodeName=...`` line describing this machine's hardware.

    ``slurmd -C`` prints the topology slurmd detects; declaring exactly that
    avoids the node being drained for having fewer resources than configured.
    """
    result = subprocess.run(
        [slurmd, "-C"], capture_output=True, text=True, check=False, timeout=30
    )
    line = next(
        (ln for ln in result.stdout.splitlines() if ln.startswith("NodeName=")), None
    )
    if line is None:
        raise SlurmError(f"`slurmd -C` printed no NodeName line: {result.stderr}")
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    fields["NodeName"] = node_name
    # Resolve to loopback explicitly: the hostname need not be in DNS.
    fields["NodeAddr"] = "127.0.0.1"
    fields["State"] = "UNKNOWN"
    return " ".join(f"{key}={value}" for key, value in fields.items())


def parse_scontrol_record(text: str) -> dict[str, str]:
    """Parse one ``scontrol show ... -o`` line into a dict.

    Values may contain spaces (e.g. ``Command=``) only in the last field, so a
    key is recognised as a word directly followed by ``=`` after whitespace.
    """
    line = text.strip()
    matches = list(re.finditer(r"(?:^|\s)([A-Za-z][\w:/]*)=", line))
    record: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(line)
        record[match.group(1)] = line[match.end() : end].strip()
    return record


def _process_alive(pid: int) -> bool:
    """True if ``pid`` runs; exited processes may linger as zombies (state Z)."""
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name.
    state = proc_stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _world_searchable(path: Path) -> bool:
    """True if ``path`` and all existing ancestors are searchable by others."""
    for directory in (path, *path.parents):
        if directory.exists() and not directory.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(content[-lines:])


# --------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------


class SlurmCluster:
    """munged + slurmctld + slurmd for one node, confined to ``root_dir``.

    Attributes:
        root_dir: directory holding configuration, state, sockets and logs.
        conf_path: the generated ``slurm.conf``.
        env: environment for SLURM client commands (``os.environ`` plus
            ``SLURM_CONF``); pass it to any subprocess that calls SLURM.
        node_name: the single node's name (the short hostname).
        partition: the single, default partition.
    """

    partition = "debug"

    def __init__(
        self, root_dir: Path | str, *, cred_expire: int = 5, start_timeout: float = 60.0
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.cred_expire = max(5, cred_expire)  # SLURM rejects values below 5
        self.start_timeout = start_timeout
        self.node_name = _short_hostname()
        self.conf_path = self.root_dir / "etc" / "slurm.conf"
        self.log_dir = self.root_dir / "log"
        self._short_socket_dir: Path | None = None
        self.munge_socket = self._choose_munge_socket()
        self.env: dict[str, str] = {**os.environ, "SLURM_CONF": str(self.conf_path)}
        # Clients started by tests must find the sbin tools too.
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), *_EXTRA_BIN_DIRS])
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, start all daemons and wait for the node.

        Raises :class:`SlurmError` (with daemon log tails) if the node is not
        idle within ``start_timeout`` seconds.
        """
        try:
            self._start_munge()
            self._write_slurm_conf()
            self._spawn(
                "slurmctld", [self._exe("slurmctld"), "-D", "-f", str(self.conf_path)]
            )
            self._spawn(
                "slurmd", [self._exe("slurmd"), "-D", "-f", str(self.conf_path)]
            )
            self._wait_until_idle()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel remaining jobs, then stop the daemons (TERM, wait, KILL)."""
        if "slurmctld" in self._processes and self.running("slurmctld"):
            self._cancel_all_jobs()
        # Reverse start order: slurmd and slurmctld still need munge to exit
        # cleanly.
        for name in reversed(list(self._processes)):
            self._terminate(self._processes[name])
        self._processes.clear()
        if self._short_socket_dir is not None:
            shutil.rmtree(self._short_socket_dir, ignore_errors=True)

    def running(self, name: str) -> bool:
        """Whether the daemon ``name`` (e.g. ``"slurmd"``) is alive."""
        process = self._processes.get(name)
        return (
            process is not None
            and process.poll() is None
            and _process_alive(process.pid)
        )

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the daemons started by this object, by daemon name."""
        return {name: process.pid for name, process in self._processes.items()}

    # -- client helpers ----------------------------------------------------

    def run(
        self, args: Sequence[str], *, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command (e.g. ``["squeue", "-h"]``) with :attr:`env`.

        Output is captured as text unless overridden; ``check`` raises
        :class:`SlurmError` with the command's stderr on a non-zero exit.
        """
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("text", True)
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 60)
        result: subprocess.CompletedProcess[str] = subprocess.run(
            list(args), check=False, **kwargs
        )
        if check and result.returncode != 0:
            raise SlurmError(
                f"{' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def submit(self, args: Sequence[str], **kwargs: Any) -> int:
        """Submit with ``sbatch --parsable ARGS`` and return the job id."""
        result = self.run(["sbatch", "--parsable", *args], **kwargs)
        # --parsable prints "id" or, on multi-cluster setups, "id;cluster".
        return int(result.stdout.strip().split(";")[0])

    def job_info(self, job_id: int | str) -> dict[str, str]:
        """All fields of ``scontrol show job -o JOB`` (e.g. ``JobState``, ``Restarts``).

        Returns an empty dict once the controller has forgotten the job.
        """
        result = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return {}
        return parse_scontrol_record(result.stdout.splitlines()[0])

    def job_state(self, job_id: int | str) -> str:
        """The job's state, e.g. ``"PENDING"``, ``"RUNNING"``, ``"COMPLETED"``.

        ``"UNKNOWN"`` if the controller does not know the job.
        """
        return self.job_info(job_id).get("JobState", "UNKNOWN")

    def wait_for_state(
        self,
        job_id: int | str,
        states: Iterable[str],
        timeout: float = 60.0,
        poll: float = 0.25,
    ) -> str:
        """Poll until the job is in one of ``states``; return that state.

        Raises :class:`TimeoutError` naming the last seen state, or
        :class:`SlurmError` if the job ends in a different terminal state (it
        would then never reach the wanted one).
        """
        wanted = set(states)
        deadline = time.monotonic() + timeout
        state = self.job_state(job_id)
        while state not in wanted:
            if state in TERMINAL_STATES:
                raise SlurmError(
                    f"job {job_id} ended {state}, wanted {sorted(wanted)}: "
                    f"{self.job_info(job_id)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} still {state} after {timeout}s, "
                    f"wanted {sorted(wanted)}"
                )
            time.sleep(poll)
            state = self.job_state(job_id)
        return state

    def node_state(self) -> str:
        """The node's state as ``scontrol`` reports it, e.g. ``"IDLE"``."""
        result = self.run(
            ["scontrol", "show", "node", "-o", self.node_name], check=False
        )
        record = parse_scontrol_record(result.stdout) if result.returncode == 0 else {}
        return record.get("State", "UNKNOWN")

    def log_tails(self, lines: int = 20) -> str:
        """The last ``lines`` lines of every daemon log, for error messages."""
        parts = []
        # *.stdout holds what a daemon printed before it opened its log file.
        logs = [*self.log_dir.glob("*.log"), *self.log_dir.glob("*.stdout")]
        for log in sorted(logs):
            parts.append(f"--- {log.name} ---\n{_tail(log, lines)}")
        return "\n".join(parts) or "<no logs>"

    # -- internals ---------------------------------------------------------

    @staticmethod
    def _exe(name: str) -> str:
        path = find_executable(name)
        if path is None:
            raise SlurmError(f"{name} not found; call ensure_slurm_installed() first")
        return path

    def _make_dir(self, name: str, mode: int = 0o755) -> Path:
        path = self.root_dir / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)  # mkdir's mode is filtered through the umask
        return path

    def _choose_munge_socket(self) -> Path:
        """Put munged's socket under ``root_dir`` when munged accepts it there.

        munged insists that every directory above its socket is searchable by
        all users, which pytest's private (0700) temp directories are not, and
        a socket path must fit in ``sun_path``.  Otherwise use a fresh /tmp dir.
        """
        socket_path = self.root_dir / "munge-run" / "munge.socket.2"
        if len(os.fsencode(socket_path)) < _MAX_SOCKET_PATH and _world_searchable(
            self.root_dir
        ):
            return socket_path
        self._short_socket_dir = Path(tempfile.mkdtemp(prefix="munge-"))
        return self._short_socket_dir / "munge.socket.2"

    def _start_munge(self) -> None:
        """Create a private munge key and start ``munged`` on its own socket."""
        # munged refuses a key readable by others or in a group/world-writable
        # directory, and clients need to traverse the socket directory (0755).
        key_dir = self._make_dir("munge", 0o700)
        key_file = key_dir / "munge.key"
        if not key_file.exists():
            key_file.write_bytes(os.urandom(1024))
        key_file.chmod(0o600)
        os.chown(key_file, os.geteuid(), os.getegid())
        self.munge_socket.parent.mkdir(parents=True, exist_ok=True)
        self.munge_socket.parent.chmod(0o755)
        self._make_dir("log")
        self._spawn(
            "munged",
            [
                self._exe("munged"),
                "--foreground",
                f"--key-file={key_file}",
                f"--socket={self.munge_socket}",
                f"--pid-file={key_dir / 'munged.pid'}",
                f"--seed-file={key_dir / 'munged.seed'}",
                f"--log-file={self.log_dir / 'munged.log'}",
            ],
        )
        self._wait_for(
            lambda: self.munge_socket.is_socket(), "munged socket", timeout=15
        )

    def _write_slurm_conf(self) -> None:
        for name in ("etc", "state", "spool", "run"):
            self._make_dir(name)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf_path.write_text(
            self._slurm_conf_text(ctld_port, slurmd_port), encoding="utf-8"
        )

    def _slurm_conf_text(self, ctld_port: int, slurmd_port: int) -> str:
        root = self.root_dir
        node_line = _node_definition(self._exe("slurmd"), self.node_name)
        settings: Mapping[str, str | int] = {
            "ClusterName": "scaffoldtest",
            "SlurmctldHost": f"{self.node_name}(127.0.0.1)",
            "SlurmctldPort": ctld_port,
            "SlurmdPort": slurmd_port,
            # Daemons run as the invoking root user; no slurm system user.
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            # cred_expire is also how long a requeued job is held back.
            "AuthInfo": f"socket={self.munge_socket},cred_expire={self.cred_expire}",
            "StateSaveLocation": root / "state",
            "SlurmdSpoolDir": root / "spool",
            "SlurmctldPidFile": root / "run" / "slurmctld.pid",
            "SlurmdPidFile": root / "run" / "slurmd.pid",
            "SlurmctldLogFile": self.log_dir / "slurmctld.log",
            "SlurmdLogFile": self.log_dir / "slurmd.log",
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            # pgid tracking kills the whole job process group at job end;
            # linuxproc leaves orphaned children running.  No cgroups here.
            "ProctrackType": "proctrack/pgid",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "SwitchType": "switch/none",
            "MpiDefault": "none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "SchedulerType": "sched/backfill",
            # Schedule often so tests (especially requeue) are quick.
            "SchedulerParameters": "sched_interval=2,bf_interval=1",
            "JobRequeue": 1,
            "ReturnToService": 2,
            "MailProg": "/bin/true",
            # Busy 2-core test machines can be slow to answer; be patient.
            "SlurmctldTimeout": 300,
            "SlurmdTimeout": 300,
            "MessageTimeout": 30,
            "InactiveLimit": 0,
            "MinJobAge": 300,
            "KillWait": 5,
            "UnkillableStepTimeout": 120,
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(node_line)
        lines.append(
            f"PartitionName={self.partition} Nodes={self.node_name} Default=YES "
            "MaxTime=INFINITE State=UP"
        )
        header = "# Generated by tests/slurm_cluster.py for a throw-away test cluster\n"
        return header + "\n".join(lines) + "\n"

    def _spawn(self, name: str, command: list[str]) -> None:
        stream = (self.log_dir / f"{name}.stdout").open("ab")
        # A new session keeps terminal signals (Ctrl-C to pytest) from hitting
        # the daemons before stop() can shut them down in order.
        self._processes[name] = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stream.close()  # the child holds its own descriptor

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name in self._processes if not self.running(name)]
            if dead or time.monotonic() > deadline:
                reason = f"{', '.join(dead)} exited" if dead else f"{timeout}s passed"
                raise SlurmError(
                    f"waiting for {what} failed ({reason})\n{self.log_tails()}"
                )
            time.sleep(0.25)

    def _wait_until_idle(self) -> None:
        self._wait_for(
            lambda: self.node_state().startswith("IDLE"),
            f"node {self.node_name} to become idle",
            timeout=self.start_timeout,
        )

    def _cancel_all_jobs(self) -> None:
        """Cancel every job and give slurmd a moment to kill their steps.

        Jobs' processes are children of slurmstepd, not of slurmd, so
        stopping the daemons alone would leave them running.
        """
        self.run(["scancel", "--full", f"--partition={self.partition}"], check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            result = self.run(["squeue", "-h", "-t", "RUNNING,COMPLETING"], check=False)
            if result.returncode != 0 or not result.stdout.strip():
                return
            time.sleep(0.25)

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
