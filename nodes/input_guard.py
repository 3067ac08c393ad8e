"""One check in front of every node of the pack: no NaN or infinity in its numbers and tensors.

ComfyUI checks a FLOAT widget against its min and max, which NaN passes (it compares false) and
which a linked value skips; a NaN then removes an edit, blackens an image or is saved. So each
node's FUNCTION is wrapped, once, at registration (nodes/__init__.py): before it runs, every
argument whose declared type (INPUT_TYPES, required and optional) is FLOAT, IMAGE, LATENT,
CONDITIONING, an inversion or an embedding VAE is checked for finiteness, and a bad one is refused
with a message naming the node and the input. A new node is covered by being registered.

The check runs at execution rather than in VALIDATE_INPUTS: ComfyUI skips its own min / max
checks for every input VALIDATE_INPUTS takes, never passes it a linked value, and repeats its
message once per input it takes.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from ..base.finite import check_finite_number, check_finite_tensor
from .common import EMBEDDING_VAE, INVERSION

UPSTREAM = "the node that makes it produced them"
FIXES = {
    "IMAGE": f"{UPSTREAM} (a NaN setting upstream, or a VAE decode that overflowed in fp16: try --fp32-vae); "
             "connect an image without them",
    "LATENT": f"{UPSTREAM} (a sampler given a NaN setting, or one that overflowed in fp16: try --force-fp32); "
              "fix that node's inputs",
    "CONDITIONING": "the text encoding produced them (a prompt weight such as '(word:nan)', or a NaN strength in a "
                    "conditioning node); give finite weights and strengths",
    INVERSION: "invert the photo again from a finite latent, or load another inversion",
    EMBEDDING_VAE: "its weights are broken (a training that diverged: train again with a lower learning_rate)",
}


def _check_image(image: Any, what: str) -> None:
    check_finite_tensor(image, what, FIXES["IMAGE"])


def _check_latent(latent: Any, what: str) -> None:
    if isinstance(latent, dict) and "samples" in latent:
        check_finite_tensor(latent["samples"], what, FIXES["LATENT"])


def check_conditioning(conditioning: Any, what: str) -> None:
    """Refuse CONDITIONING whose embeddings (or pooled outputs) hold NaN or infinity, naming ``what``."""
    for entry in conditioning:
        check_finite_tensor(entry[0], what, FIXES["CONDITIONING"])
        pooled = entry[1].get("pooled_output") if isinstance(entry[1], dict) else None
        if pooled is not None:
            check_finite_tensor(pooled, f"{what} (its pooled output)", FIXES["CONDITIONING"])


def _check_inversion(inversion: Any, what: str) -> None:
    for field in ("unconds", "sigmas", "noisy", "source", "pivots"):
        tensor = getattr(inversion, field, None)
        if tensor is not None:
            check_finite_tensor(tensor, f"{what} (its {field})", FIXES[INVERSION])
    check_finite_number(getattr(inversion, "guidance", 0.0), f"{what} (its guidance)")


def _check_embedding_vae(trained: Any, what: str) -> None:
    for name, weight in trained.vae.named_parameters():
        check_finite_tensor(weight, f"{what} (weight {name})", FIXES[EMBEDDING_VAE])


def _number_check(options: dict) -> Callable[[Any, str], None]:
    low, high = options.get("min"), options.get("max")
    span = f" from {low} to {high}" if low is not None and high is not None else ""

    def check(value: Any, what: str) -> None:
        check_finite_number(value, what, span)

    return check


TENSOR_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "IMAGE": _check_image,
    "LATENT": _check_latent,
    "CONDITIONING": check_conditioning,
    INVERSION: _check_inversion,
    EMBEDDING_VAE: _check_embedding_vae,
}


def input_checks(node_class: type) -> dict[str, Callable[[Any, str], None]]:
    """The finiteness check of each input of ``node_class`` that has one, by input name."""
    spec = node_class.INPUT_TYPES()
    checks = {}
    for section in ("required", "optional"):
        for name, declared in spec.get(section, {}).items():
            kind, options = declared[0], (declared[1] if len(declared) > 1 else {})
            if kind == "FLOAT":
                checks[name] = _number_check(options)
            elif isinstance(kind, str) and kind in TENSOR_CHECKS:
                checks[name] = TENSOR_CHECKS[kind]
    return checks


def guard_inputs(node_class: type, display_name: str) -> None:
    """Wrap ``node_class``'s FUNCTION (an instance method) so that it refuses non-finite inputs
    with "<display_name>: <input> ...; give a finite number" (or what to do about a tensor)."""
    function = getattr(node_class, node_class.FUNCTION)
    if getattr(function, "guarded_inputs", None) is node_class:
        return
    checks = input_checks(node_class)
    signature = inspect.signature(function)

    @functools.wraps(function)
    def guarded(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        for name, value in arguments.items():
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                values = value.items()
            else:
                values = ((name, value),)
            for input_name, given in values:
                if given is not None and input_name in checks:
                    checks[input_name](given, f"{display_name}: {input_name}")
        return function(self, *args, **kwargs)

    guarded.guarded_inputs = node_class
    setattr(node_class, node_class.FUNCTION, guarded)
