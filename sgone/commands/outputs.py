"""The output folder of a command: checked before any work, made when the first result is ready,
results written atomically."""
from __future__ import annotations

from pathlib import Path

from sgone.errors import SgoneError

def check_output_folder(output: Path) -> None:
    """The output folder, or the nearest existing folder above it, must be a folder."""
    for folder in (output, *output.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise SgoneError(f"{folder}: exists and is not a folder" +
                                 ("" if folder == output else f"; cannot create {output}"))
            return


def make_output_folder(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SgoneError(f"{output}: exists and is not a folder") from None
    except OSError as exc:
        raise SgoneError(f"{output}: cannot create the output folder ({exc.strerror or exc})") from None


def write_results(files: dict) -> None:
    """Write {path: HxW or HxWx3 uint8 array} as PNGs, each atomically; OSError -> SgoneError."""
    from sgone.io import save_image

    for path, array in files.items():
        try:
            save_image(path, array)
        except OSError as exc:
            raise SgoneError(f"{path}: cannot write ({exc.strerror or exc})") from None
