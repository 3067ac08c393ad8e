"""ComfyUI servers on a Ray cluster for batch_edit.py (``--ray``; ``pip install ".[distributed]"``):
one actor per GPU (or per CPU slot with ``--ray-cpu``), each starting and owning a ComfyUI server
on its node, which the batch dispatcher then feeds over HTTP like any other server.

Every node needs the same ComfyUI install at the given path (``--comfyui`` or $COMFYUI_PATH) with
this pack in its custom_nodes/, and the models the workflow loads in its models/ folder (or
``--ray-models``): a shared volume or the node image, see the README. Each actor's server gets a
base directory of its own (its own input/output folders; custom_nodes and models linked), so
servers on one node never write each other's files. The server dies with its actor.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

STARTUP_SECONDS = 600


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the actor's process ends (Linux), so that a
    killed actor leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ComfyServerActor:
    """Body of the Ray actor (made remote in start_servers): a ComfyUI server on this node."""

    def __init__(self, comfyui: str, custom_nodes: str | None, models: str | None, cpu: bool, threads: int | None) -> None:
        root = Path(comfyui)
        if not (root / "main.py").is_file():
            raise RuntimeError(f"{socket.gethostname()}: no ComfyUI at {root} (main.py missing); install it "
                               "there on every node or pass --comfyui")
        self.base = Path(tempfile.mkdtemp(prefix="comfyui_actor_"))
        (self.base / "custom_nodes").symlink_to(Path(custom_nodes or root / "custom_nodes").resolve(), target_is_directory=True)
        (self.base / "models").symlink_to(Path(models or root / "models").resolve(), target_is_directory=True)
        with socket.socket() as s:
            s.bind(("", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        command = [sys.executable, "main.py", "--listen", "0.0.0.0", "--port", str(self.port),
                   "--base-directory", str(self.base), "--disable-auto-launch"] + (["--cpu"] if cpu else [])
        self.log = open(self.base / "server.log", "w")
        self.process = subprocess.Popen(command, cwd=root, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent)

    def url(self) -> str:
        """The server's address once it answers (seen from other nodes: this node's IP)."""
        import ray

        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/object_info/LoadImage", timeout=5):
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                raise RuntimeError(f"the ComfyUI server on {socket.gethostname()} did not start:\n"
                                   f"{(self.base / 'server.log').read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        return f"http://{ray.util.get_node_ip_address()}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def connect(address: str, cpus: int | None):
    """ray.init: ``local`` starts Ray on this machine (``cpus`` CPU slots), anything else
    (``auto``, ``ray://host:10001``) joins that cluster."""
    try:
        import ray
    except ImportError:
        raise SystemExit('--ray needs Ray: pip install ".[distributed]" (or pip install ray)') from None
    if address == "local":
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


def start_servers(ray, comfyui: str, custom_nodes: str | None, models: str | None, per_cpu: bool,
                  count: int | None) -> tuple[list, list[str]]:
    """(actors, their servers' URLs): one actor per GPU of the cluster, or per CPU slot with
    ``per_cpu``, at most ``count``. Raises SystemExit when the cluster has none."""
    resources = ray.cluster_resources()
    kind = "CPU" if per_cpu else "GPU"
    slots = int(resources.get(kind, 0))
    if count:
        slots = min(slots, count)
    if slots < 1:
        raise SystemExit(f"--ray: the cluster has no {kind} to start servers on"
                         + ("" if per_cpu else "; pass --ray-cpu to run on its CPUs"))
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes need not have this script
    options = {"num_cpus": 1} if per_cpu else {"num_gpus": 1, "num_cpus": 1}
    actor_class = ray.remote(**options)(ComfyServerActor)
    actors = [actor_class.remote(comfyui, custom_nodes, models, per_cpu, 1 if per_cpu else None) for _ in range(slots)]
    try:
        urls = ray.get([actor.url.remote() for actor in actors])
    except Exception:
        stop_servers(ray, actors)
        raise
    return actors, urls


def stop_servers(ray, actors: list) -> None:
    try:
        ray.get([actor.stop.remote() for actor in actors], timeout=60)
    except Exception:  # an actor that is gone already took its server with it
        pass
    for actor in actors:
        ray.kill(actor)
