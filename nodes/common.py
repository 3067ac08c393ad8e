"""Names shared by the pack's nodes, and their model folders."""

import os

import folder_paths

CATEGORY_ROOT = "prompt_edit"
CATEGORY_P2P = f"{CATEGORY_ROOT}/prompt-to-prompt"
CATEGORY_INVERSION = f"{CATEGORY_ROOT}/inversion"
CATEGORY_VARIATIONS = f"{CATEGORY_ROOT}/variations"

P2P_EDIT = "P2P_EDIT"
P2P_ATTENTION = "P2P_ATTENTION"
INVERSION = "NULL_TEXT_INVERSION"
EMBEDDING_VAE = "EMBEDDING_VAE"


def register_model_folder(name: str) -> str:
    """Register ``models/<name>/`` with ComfyUI for safetensors files only (the pack loads no
    pickle); returns ``name``."""
    folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)
    folder_paths.folder_names_and_paths[name] = (folder_paths.folder_names_and_paths[name][0], {".safetensors"})
    return name


def writable_model_folder(name: str) -> str:
    """The first folder registered for ``name`` (where the pack saves), created if needed."""
    directory = folder_paths.get_folder_paths(name)[0]
    os.makedirs(directory, exist_ok=True)
    return directory


def model_file_check(folder: str, name: str, how_to_make: str) -> bool | str:
    """For a loader's VALIDATE_INPUTS: True when ``name`` is in ``models/<folder>/``, else a message
    that says how to make the file (instead of the validator's bare "Value not in list")."""
    if folder_paths.get_full_path(folder, name) is not None:
        return True
    present = folder_paths.get_filename_list(folder)
    where = f"models/{folder}/ holds " + (", ".join(present) if present else "no file yet")
    return f"{name!r} is not there ({where}); {how_to_make}"
