"""The class names file: one name per line, in index order (data folders, run folders and
exports all hold one). The one reader of it; TF-free, so the data build's driver uses it too.
Classes are matched by these names, never by index alone."""

import os

from lgd_io import files
from lgd_io.errors import BadInput

FILE_NAME = "class_names.txt"


def path_in(folder):
    """`folder/class_names.txt` (a run folder, a data folder or an export)."""
    return os.path.join(os.fspath(folder), FILE_NAME)


def parse(text):
    """The names of a class names file's text (blank lines and surrounding spaces dropped)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def read(path_or_folder, num_classes=None):
    """The class names of a class names file, or None when there is no such file. A folder
    means its class_names.txt.

    Args:
        path_or_folder: the file, or a folder holding it (run folder, data folder, export).
        num_classes: when given, the number of names the file must hold.

    Raises:
        BadInput: the file cannot be read, or holds another number of names.
    """
    path = os.fspath(path_or_folder)
    if files.is_dir(path):
        path = path_in(path)
    if not files.exists(path):
        return None
    try:
        with files.open_file(path, "r") as f:
            names = parse(f.read())
    except (UnicodeDecodeError, *files.io_errors()) as error:
        raise BadInput(f"cannot read {path}: {files.failure_reason(error)}") from None
    if num_classes is not None and len(names) != int(num_classes):
        raise BadInput(f"{path} lists {len(names)} classes, {num_classes} expected "
                       "(NUM_CLASSES, or the model's outputs)")
    return names


def write(folder, names):
    """Writes `folder/class_names.txt` whole or not at all."""
    files.write_text(path_in(folder), "\n".join(names) + "\n")
