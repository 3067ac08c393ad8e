"""ComfyUI's own main.py as a server on 127.0.0.1, started and stopped by the tests (several at once
for the batch tests): a base directory whose custom_nodes/ holds this pack and whose checkpoints/
has the given files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import comfyui, pack

STARTUP_SECONDS = 180


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    base: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return (self.base / "server.log").read_text(errors="replace")[-4000:]


def make_base(base: Path, checkpoints: list[Path]) -> Path:
    """A ComfyUI base directory with this pack in custom_nodes/ and the checkpoints linked."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "comfyui_prompt_edit"
    if not link.exists():
        link.symlink_to(pack.ROOT, target_is_directory=True)
    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    for checkpoint in checkpoints:
        target = base / "models" / "checkpoints" / checkpoint.name
        if not target.exists():
            target.symlink_to(checkpoint.resolve())
    (base / "input").mkdir(exist_ok=True)
    return base


def start_server(root: Path, base: Path, threads: int | None = None) -> RunningServer:
    """Start main.py (CPU) on a free port with ``base`` as its base directory; return once it
    serves this pack's nodes. ``threads`` pins torch to that many CPU threads."""
    port = comfyui.free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(base / "server.log", "w")
    process = subprocess.Popen([sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--cpu",
                                "--base-directory", str(base), "--disable-auto-launch"],
                               cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    server = RunningServer(f"http://127.0.0.1:{port}", process, base)
    return server


def wait_ready(server: RunningServer, timeout: float = STARTUP_SECONDS) -> RunningServer:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/object_info/PromptEditP2PPrompts", timeout=5) as r:
                if json.loads(r.read()):
                    return server
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the ComfyUI server did not start:\n{server.log()}")
        time.sleep(0.5)
