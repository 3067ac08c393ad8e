"""scripts/env.sh's --host without ../shared/hosts: the pinned ComfyUI is cloned from a git
repository (here a local bare one holding a minimal fake ComfyUI tree, built in tmp) into the
place extract.sh uses, and every way that can fail says so in one line. No venv is built."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import pack

ENV_SH = pack.ROOT / "scripts" / "env.sh"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.fixture
def comfyui_repository(tmp_path) -> Path:
    """A bare repository whose tag v9.9.9 holds what use_host needs of a ComfyUI root."""
    tree = tmp_path / "tree"
    (tree / "comfy").mkdir(parents=True)
    (tree / "nodes.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (tree / "comfy" / "__init__.py").write_text("")
    (tree / "requirements.txt").write_text("torch\n")
    git("init", "-q", cwd=tree)
    git("add", ".", cwd=tree)
    git("commit", "-q", "-m", "ComfyUI 9.9.9", cwd=tree)
    git("tag", "v9.9.9", cwd=tree)
    # a tag that is not a ComfyUI: only a README
    (tree / "nodes.py").unlink()
    shutil.rmtree(tree / "comfy")
    git("commit", "-q", "-a", "-m", "not a ComfyUI", cwd=tree)
    git("tag", "v0.0.1", cwd=tree)
    bare = tmp_path / "ComfyUI.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    git("push", "-q", str(bare), "HEAD:refs/heads/master", "--tags", cwd=tree)
    return bare


def env_sh(tmp_path: Path, command: str, git_url: Path | str, path: str | None = None) -> subprocess.CompletedProcess:
    """Run `command` after sourcing env.sh, with no snapshots and the cache under tmp_path."""
    hosts = tmp_path / "no_snapshots"
    hosts.mkdir(exist_ok=True)
    env = {**os.environ, "PROMPT_EDIT_HOSTS": str(hosts), "PROMPT_EDIT_COMFYUI_GIT": str(git_url),
           "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([shutil.which("bash"), "-c", f'source "{ENV_SH}" && {command}'], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_host_without_a_snapshot_is_cloned_where_extract_sh_puts_snapshots(tmp_path, comfyui_repository):
    result = env_sh(tmp_path, "host_root 9.9.9", comfyui_repository)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "cache" / "comfyui-hosts" / "9.9.9" / "ComfyUI"
    assert result.stdout.strip() == str(root)
    assert (root / "nodes.py").is_file() and (root / "comfy").is_dir() and (root / "requirements.txt").is_file()
    assert (root / ".extracted").is_file()  # extract.sh's marker of a finished copy
    assert not (root.parent / "ComfyUI.partial").exists()
    # the second time it is reused without the repository
    shutil.rmtree(comfyui_repository)
    again = env_sh(tmp_path, "host_root 9.9.9", comfyui_repository)
    assert again.returncode == 0 and again.stdout.strip() == str(root), again.stderr


def test_a_failed_clone_says_what_to_do_and_leaves_nothing(tmp_path, comfyui_repository):
    for version, git_url, expected in (
            ("9.9.8", comfyui_repository, "cannot clone tag v9.9.8"),  # no such tag
            ("9.9.9", tmp_path / "no_such_repository.git", "cannot clone tag v9.9.9"),  # unreachable
            ("0.0.1", comfyui_repository, "is not a ComfyUI")):
        result = env_sh(tmp_path, f"host_root {version}", git_url)
        assert result.returncode == 2 and result.stdout == ""
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith(f"--host {version}: ") and expected in message, result.stderr
        assert "PROMPT_EDIT_COMFYUI_GIT" in message
        assert not (tmp_path / "cache" / "comfyui-hosts" / version / "ComfyUI").exists()
        assert not (tmp_path / "cache" / "comfyui-hosts" / version / "ComfyUI.partial").exists()


def test_without_git_the_message_says_to_install_it(tmp_path):
    tools = tmp_path / "bin"  # only what sourcing env.sh needs, no git
    tools.mkdir()
    os.symlink(shutil.which("dirname"), tools / "dirname")
    result = env_sh(tmp_path, "host_root 0.33.0", "unused", path=str(tools))
    assert result.returncode == 2
    assert "--host 0.33.0: no snapshot in" in result.stderr and "git is not installed" in result.stderr


def test_an_unpinned_version_is_refused_before_any_venv_is_built(tmp_path):
    result = env_sh(tmp_path, "PACK_ROOT=/nonexistent; use_host 1.2.3", "unused")
    assert result.returncode == 2
    assert "--host 1.2.3: not a ComfyUI version the pack is tested on; use one of: 0.3.64 0.33.0" in result.stderr
    assert "setting up" not in result.stderr
