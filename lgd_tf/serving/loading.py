"""Finding and loading trained models: model_dir, `.keras` files and exported SavedModels.

Trust model: a `.keras` file is loaded with `safe_mode=True`, pinned even if the process enabled
unsafe deserialisation (only classes registered with Keras or lgd_tf are built, no Lambda or
pickled code); a SavedModel is a TensorFlow graph that is
executed as is, so only load SavedModels you trust (as with any TF Serving model).
"""

import pathlib

from lgd_io.errors import BadInput, one_line
from lgd_tf.models.saving import load_model_safely
from lgd_tf.runs import run_folder

CLASS_NAMES_FILE = run_folder.CLASS_NAMES
STAGE_FILES = run_folder.STAGE_FILES
SAVED_MODEL_FILE = "saved_model.pb"


def find_keras_file(model_dir_or_keras_path):
    """`model_dir/stage2.keras`, else `model_dir/stage1.keras`, or the `.keras` path itself."""
    path = pathlib.Path(model_dir_or_keras_path)
    if path.is_dir():
        for name in STAGE_FILES:
            if (path / name).is_file():
                return path / name
        raise BadInput(
            f"No trained model in {path}: expected {' or '.join(STAGE_FILES)} there. "
            f"Received: {path}")
    if path.suffix == run_folder.MODEL_SUFFIX and path.is_file():
        return path
    raise BadInput(
        f"Expected a model_dir or an existing .keras file. Received: {model_dir_or_keras_path}")


def read_class_names(path, num_classes):
    """Class names from `path` (a class_names.txt, or a folder holding one; one per line);
    `None` path or no such file -> "0", "1", ... ."""
    names = None if path is None else run_folder.read_class_names(path, num_classes)
    return [str(i) for i in range(num_classes)] if names is None else names


def load_keras_model(model_dir_or_keras_path):
    """Loads a trained classifier and its class names.

    Class names come from `class_names.txt` next to the `.keras` file (a model_dir and an export
    dir both have one); without it the names are the class indices.

    Returns:
        `(model, class_names, keras_path)`.
    """
    import lgd_tf  # noqa: F401  (registers the lgd_tf Keras classes for deserialisation)

    keras_path = find_keras_file(model_dir_or_keras_path)
    try:
        model = load_model_safely(keras_path)  # safe mode pinned whatever ran before
    except Exception as error:  # Keras raises many types for a corrupt or foreign file.
        raise BadInput(f"Could not load {keras_path}: {one_line(error)}") from error
    class_names = read_class_names(keras_path.parent, _num_outputs(model))
    return model, class_names, keras_path


def find_saved_model(path):
    """The SavedModel directory for `path`: itself, or its highest numeric version subdirectory
    (TF Serving's `export_dir/<version>/` layout). `None` if there is none."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return None
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    versions = [p for p in path.iterdir()
                if p.name.isdigit() and (p / SAVED_MODEL_FILE).is_file()]
    if not versions:
        return None
    return max(versions, key=lambda p: int(p.name))


def _num_outputs(model):
    from lgd_tf.serving.module import num_classes

    return num_classes(model)


