"""The pack's layout, read from its source (no import, so no ComfyUI needed): one error base for
what a user can cause, and a core that meets ComfyUI only in the modules named for it."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

from harness import pack

ERROR_BASE = "PromptEditError"
# An ImportError on purpose: the pack refuses to load on a ComfyUI that lacks a feature it needs.
NOT_USER_ERRORS = {"UnsupportedComfyUIError"}
CORE_PACKAGES = ("attention", "base", "vae_embed", "inversion", "evaluation")
# the core modules that meet ComfyUI: inversion/comfy_patch.py, vae_embed/comfy_training.py, …
HOST_MODULE_PREFIX = "comfy_"


def sources(entries: tuple[str, ...]) -> list[Path]:
    found = []
    for entry in entries:
        path = pack.ROOT / entry
        found += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def base_name(node: ast.expr) -> str:
    """``ValueError`` for ``ValueError``, ``errors.PromptEditError`` and the like."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def test_every_exception_class_of_the_pack_derives_from_the_error_base():
    bases: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for path in sources(pack.RUNTIME_PACKAGES):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ClassDef):
                assert node.name not in bases, f"two classes named {node.name}: {where[node.name]}, {path}"
                bases[node.name] = [base_name(b) for b in node.bases]
                where[node.name] = str(path.relative_to(pack.ROOT))

    def is_exception(name: str) -> bool:
        if name in bases:
            return any(is_exception(b) for b in bases[name])
        builtin = getattr(builtins, name, None)
        return isinstance(builtin, type) and issubclass(builtin, BaseException)

    def derives_from_base(name: str) -> bool:
        return name == ERROR_BASE or any(derives_from_base(b) for b in bases.get(name, []))

    exceptions = sorted(name for name in bases if is_exception(name))
    assert ERROR_BASE in exceptions and len(exceptions) > 5, exceptions  # the walk found them
    strays = [f"{where[name]}: {name}({', '.join(bases[name])})" for name in exceptions
              if name not in NOT_USER_ERRORS and not derives_from_base(name)]
    assert not strays, f"derive these from {ERROR_BASE} (base/errors.py): {strays}"


def imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(level, dotted name) of every import: level 0 for absolute ones, the dots for relative ones
    (``from ..patching import comfy_model`` gives ``patching.comfy_model``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            found.append((node.level, module))
            found += [(node.level, f"{module}.{alias.name}".strip(".")) for alias in node.names]
    return found


def test_the_core_meets_comfyui_only_in_modules_named_for_it():
    """attention/, base/, vae_embed/, inversion/ and evaluation/ are plain torch, except the
    ``comfy_*`` modules: no other module imports ComfyUI, directly or through a ``comfy_*`` module."""
    offenders = []
    for path in sources(CORE_PACKAGES):
        if path.stem.startswith(HOST_MODULE_PREFIX):
            continue
        for level, name in imports(parse(path)):
            parts = name.split(".")
            host = level == 0 and parts[0] in pack.HOST_MODULES
            through_host_module = level > 0 and any(part.startswith(HOST_MODULE_PREFIX) for part in parts)
            if host or through_host_module:
                offenders.append(f"{path.relative_to(pack.ROOT)}: {'.' * level}{name}")
    assert not offenders, (f"move what meets ComfyUI into a module named {HOST_MODULE_PREFIX}*.py "
                           f"(or into nodes/): {offenders}")


def test_the_check_sees_a_host_import():
    """The walk above finds the imports it is meant to refuse."""
    tree = ast.parse("import comfy.samplers\nfrom folder_paths import x\nfrom ..patching.comfy_model import y\n")
    assert (0, "comfy.samplers") in imports(tree) and (0, "folder_paths") in imports(tree)
    assert (2, "patching.comfy_model.y") in imports(tree)


def test_what_the_pack_raises_derives_from_the_error_base():
    """No runtime module raises a built-in exception class itself: an error a user can cause is a
    PromptEditError (a ValueError, so ``except ValueError`` still catches it) that names the input."""
    builtin_errors = {name for name in dir(builtins)
                      if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), Exception)}
    strays = []
    for path in sources(pack.RUNTIME_PACKAGES):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = base_name(node.exc.func)
                if name in builtin_errors:
                    strays.append(f"{path.relative_to(pack.ROOT)}:{node.lineno}: {name}")
    assert not strays, f"raise {ERROR_BASE} (base/errors.py) or a class derived from it: {strays}"
