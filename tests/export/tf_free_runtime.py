"""A Python without TensorFlow that runs `.tflite` (ai-edge-litert) and `.onnx` (onnxruntime).

`runtime_python(cache_dir)` makes a virtual environment (`python -m venv --without-pip`,
0.3 s) whose site-packages holds symlinks to ai-edge-litert, onnxruntime, numpy and their
dependency closure as installed in the test environment, and nothing else: `import
tensorflow` fails there (checked by the runner). Nothing is downloaded, so CI needs only the
`test` extra; a `pip install` into a fresh venv (about 30 s) is what this replaces.
"""

import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig

RUNTIMES = ("ai-edge-litert", "onnxruntime", "numpy")
FORBIDDEN = ("tensorflow", "tensorflow-cpu", "tensorflow_cpu", "keras", "tf2onnx", "lgd_tf")

RUNNER = r'''
import json, sys
import numpy as np
for name in ("tensorflow", "keras", "lgd_tf", "tf2onnx"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} is importable in the runtime Python")
jobs = json.load(open(sys.argv[1]))
results = {}
for key, (fmt, model_path, clip_path) in jobs.items():
    clip = np.load(clip_path)
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=model_path)
        interpreter.allocate_tensors()
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        interpreter.set_tensor(inp["index"], clip)
        interpreter.invoke()
        results[key] = interpreter.get_tensor(out["index"])
        results[key + "/io"] = np.array([inp["name"], str(inp["dtype"]), out["name"]])
    else:
        import onnxruntime as ort
        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        results[key] = session.run(None, {inp.name: clip})[0]
        results[key + "/io"] = np.array([inp.name, inp.type, out.name])
np.savez(sys.argv[2], **results)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
'''


def _normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names):
    """Distributions `names` and what they require (no extras), installed here."""
    seen, todo = {}, list(names)
    while todo:
        name = _normal(todo.pop())
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed
        seen[name] = dist
        for requirement in dist.requires or ():
            if "extra ==" in requirement:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return seen


def runtime_python(cache_dir):
    """Path of the TF-free python, built (once per cache_dir) from this environment."""
    cache_dir = pathlib.Path(cache_dir)
    python = cache_dir / "venv" / "bin" / "python"
    if python.exists():
        return python
    dists = _closure(RUNTIMES)
    bad = [name for name in dists if name in map(_normal, FORBIDDEN)]
    if bad:
        raise RuntimeError(f"The runtimes depend on {bad}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(cache_dir / "venv")],
                   check=True)
    version = sysconfig.get_python_version()
    site = cache_dir / "venv" / "lib" / f"python{version}" / "site-packages"
    for dist in dists.values():
        tops = {pathlib.PurePath(str(f)).parts[0] for f in dist.files or ()}
        for top in tops:
            source = pathlib.Path(dist.locate_file(top))
            if top.endswith(".pth") or top == ".." or not source.exists():
                continue
            target = site / top
            if not target.exists():
                os.symlink(source, target)
    (cache_dir / "runtimes.json").write_text(json.dumps(
        {name: dist.version for name, dist in sorted(dists.items())}))
    return python


def run_without_tensorflow(python, jobs, workdir):
    """Runs `jobs` ({key: (format, model path, clip .npy path)}) in the TF-free python;
    returns {key: output array, key + "/io": [input name, input dtype, output name]}."""
    import numpy as np

    workdir = pathlib.Path(workdir)
    (workdir / "jobs.json").write_text(json.dumps({k: [str(x) for x in v]
                                                   for k, v in jobs.items()}))
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(python), "-I", "-c", RUNNER, str(workdir / "jobs.json"),
                             str(workdir / "out.npz")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
    with np.load(workdir / "out.npz") as data:
        return {key: data[key] for key in data.files}
