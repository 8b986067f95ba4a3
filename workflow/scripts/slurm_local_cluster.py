"""A throw-away one-node SLURM cluster on this machine, to try the SLURM profile (and used by tests/test_slurm.py).

    sudo apt-get install slurm-wlm munge                       # Debian / Ubuntu (slurm 22.05 on Debian 12)
    sudo python workflow/scripts/slurm_local_cluster.py start /tmp/slurm-test
    export SLURM_CONF=/tmp/slurm-test/slurm.conf PATH=/tmp/slurm-test/bin:$PATH   # printed by `start`
    snakemake --workflow-profile workflow/profiles/slurm ...   # overrides for this cluster: docs/cluster.md
    sudo python workflow/scripts/slurm_local_cluster.py stop /tmp/slurm-test

Everything lives in the given folder: its own munge key and socket (a system munged is left alone), slurm.conf,
state, spool, pid and log files; free ports are picked, so no system slurmctld is disturbed. The node is this host
with the CPUs and memory `slurmd -C` reports. No accounting database: accounting_storage/none, so `sacct` answers
nothing and the plugin must query `squeue` (`--slurm-status-command squeue`), which sees a finished job only while
slurmctld keeps it: MinJobAge=600 s, longer than the plugin's slowest status interval (180 s). Needs root (slurmd
starts jobs as their user; munged and slurmd run as root here).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order (the node before the controller)
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "squeue", "scancel", "scontrol")
INSTALL_HINT = "apt-get install slurm-wlm munge"

SLURM_CONF = """\
# One-node test cluster written by workflow/scripts/slurm_local_cluster.py (no accounting database).
ClusterName=pdmtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
# No cgroups (containers often lack them) and no accounting: the plainest plugins.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# squeue must still list a finished job when the executor plugin next asks (its interval grows to 180 s).
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing_requirements() -> str | None:
    """Why a cluster cannot start here (None when it can): the binaries, and root."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the one-node SLURM cluster needs root (slurmd starts jobs as their user): run as root"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_line() -> tuple[str, str]:
    """(node name, 'NodeName=... CPUs=... RealMemory=...') for this host, from `slurmd -C` (UpTime dropped)."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    fields = [f for f in line.split() if not f.startswith("UpTime=")]
    return fields[0].removeprefix("NodeName="), " ".join(fields)


def environment(state_dir: Path) -> dict[str, str]:
    """The environment under which sinfo, sbatch, squeue (and so the executor plugin) talk to this cluster.

    PATH starts with the folder's bin/, whose `srun` sets SLURM_CONF: inside each job the jobstep plugin
    (snakemake-executor-plugin-slurm-jobstep 0.6.1) removes every SLURM_* variable before its `srun`, which then only
    finds /etc/slurm/slurm.conf; a real cluster keeps its config there, this one stays out of /etc.
    """
    state_dir = Path(state_dir)
    path = f"{state_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "SLURM_CONF": str(state_dir / "slurm.conf"), "PATH": path}


def _write_srun_wrapper(state_dir: Path) -> None:
    wrapper = state_dir / "bin" / "srun"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={state_dir}/slurm.conf exec {shutil.which("srun")} "$@"\n')
    wrapper.chmod(0o755)


def _run(command: list[str], state_dir: Path) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=environment(state_dir))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}\n"
                           f"logs: {state_dir}/*.log")


def start(state_dir: Path, timeout_s: float = 60) -> dict[str, str]:
    """Write the config, start munged, slurmctld and slurmd as daemons, wait until the node is idle.

    Returns the environment for SLURM's client commands. On any failure the daemons already started are stopped.
    """
    reason = missing_requirements()
    if reason:
        raise RuntimeError(reason)
    state_dir = Path(state_dir).resolve()
    for sub in ("state", "spool"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o755)  # munged: its socket folder readable by all, its key folder writable by no other
    key = state_dir / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o600)
    node, node_line = _node_line()
    conf = SLURM_CONF.format(node=node, node_line=node_line, dir=state_dir, ctld_port=_free_port(),
                             slurmd_port=_free_port())
    (state_dir / "slurm.conf").write_text(conf)
    _write_srun_wrapper(state_dir)
    try:
        _run(["munged", f"--socket={state_dir}/munge.socket", f"--key-file={key}",
              f"--pid-file={state_dir}/munged.pid", f"--log-file={state_dir}/munged.log",
              f"--seed-file={state_dir}/munged.seed"], state_dir)
        _run(["slurmctld", "-c", "-f", str(state_dir / "slurm.conf")], state_dir)  # -c: no state from earlier runs
        _run(["slurmd", "-c", "-N", node, "-f", str(state_dir / "slurm.conf")], state_dir)
        wait_until_idle(state_dir, timeout_s)
    except BaseException:
        stop(state_dir)
        raise
    return environment(state_dir)


def wait_until_idle(state_dir: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                              env=environment(state_dir))
        state = (done.stdout or done.stderr).strip()
        if done.returncode == 0 and state == "idle":
            return
        time.sleep(1)
    raise RuntimeError(f"the SLURM node is not idle after {timeout_s:.0f} s (sinfo: {state!r}); "
                       f"logs: {state_dir}/slurmctld.log, slurmd.log, munged.log")


def stop(state_dir: Path, timeout_s: float = 20) -> list[str]:
    """Cancel this cluster's jobs, then stop the daemons its pid files name (each by its own pid).

    Returns the daemons that were running."""
    if (Path(state_dir) / "slurmctld.pid").exists():  # jobs left by a failed run: slurmstepd would outlive slurmd
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                              env=environment(state_dir), timeout=30).stdout.split()
        if jobs:
            subprocess.run(["scancel", *jobs], env=environment(state_dir), timeout=30)
            time.sleep(2)
    stopped = []
    for daemon in DAEMONS:
        pid_file = Path(state_dir) / f"{daemon}.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            continue
        stopped.append(daemon)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a daemon that exited but is not reaped yet (our child) is a zombie: gone for our purpose
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    action, state_dir = argv[0], Path(argv[1]).resolve()
    if action == "stop":
        print("stopped:", ", ".join(stop(state_dir)) or "nothing was running")
        return 0
    try:
        start(state_dir)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("one-node cluster up (node idle). For its client commands and the jobs' srun:\n"
          f"  export SLURM_CONF={state_dir}/slurm.conf PATH={state_dir}/bin:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
