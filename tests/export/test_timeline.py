"""`predict --timeline`: window scores over a video (lgd_tf.inference.timeline), CSV and PNG."""

import csv
import json

import numpy as np
import pytest

from lgd_tf import predict
from lgd_tf.inference import predict as predict_lib
from lgd_tf.inference import timeline as timeline_lib
from tests.export.conftest import NUM_FRAMES, bright_or_dark_clips, write_video

FPS = 8
# dark frames [0, 22), bright [22, 38), dark [38, 50): boundaries off the window grid.
SEGMENTS = ((0, 22), (1, 16), (0, 12))
BOUNDARIES = (22, 38)


@pytest.fixture(scope="module")
def dark_bright_dark(tmp_path_factory):
    rng = np.random.default_rng(11)
    parts = []
    for label, length in SEGMENTS:
        clips = bright_or_dark_clips(rng, [label] * (-(-length // NUM_FRAMES)), size=(40, 56))
        parts.append(clips.reshape(-1, 40, 56, 3)[:length])
    frames = np.concatenate(parts)
    return write_video(tmp_path_factory.mktemp("timeline") / "dark_bright_dark.mp4", frames,
                       fps=FPS)


def _true_label(start, end):
    """The label of a window inside one segment, None for one across a boundary."""
    edges = (0, *BOUNDARIES, 10**9)
    for (lo, hi), (label, _) in zip(zip(edges[:-1], edges[1:], strict=True), SEGMENTS,
                                    strict=True):
        if lo <= start and end <= hi:
            return ["dark", "bright"][label]
    return None


def test_top_label_switches_within_one_window_of_each_boundary(exported, dark_bright_dark):
    export_dir, _ = exported
    clf = predict_lib.as_classifier(export_dir)
    timeline = timeline_lib.video_timeline(clf, dark_bright_dark)
    assert timeline.window == timeline.window_stride == NUM_FRAMES
    # Windows side by side from 0, plus one ending at the last frame (50 = 12 * 4 + 2).
    assert timeline.starts.tolist() == [*range(0, 47, 4), 46]
    assert timeline.ends[-1] == 50
    np.testing.assert_allclose(timeline.start_seconds[:2], [0.0, 4 / FPS])
    top = [row[0][1] for row in timeline.top_k(1)]
    checked = 0
    for start, end, label in zip(timeline.starts, timeline.ends, top, strict=True):
        expected = _true_label(start, end)
        if expected is not None:
            assert label == expected, (start, end, top)
            checked += 1
    assert checked == len(top) - 2  # every window but the two across a boundary
    assert timeline.prediction.top_k(1)[0][1] == "dark"


def test_timeline_command_writes_csv_and_png(trained_model_dir, dark_bright_dark, tmp_path,
                                             capsys):
    prefix = tmp_path / "out" / "timeline"
    prefix.parent.mkdir()
    model = trained_model_dir / "stage2.keras"
    code = predict.run(["predict", f"--model={model}", f"--video={dark_bright_dark}",
                        "--short_side=32", "--num_clips=2", f"--timeline={prefix}",
                        "--window_stride=2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    written = json.loads(out)["timeline"]
    assert written == {"csv": f"{prefix}.csv", "png": f"{prefix}.png"}
    with open(written["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["start_s", "end_s", "start_frame", "end_frame", "label_1",
                             "score_1", "label_2", "score_2"]
    # Overlapping windows every 2 frames: starts 0, 2, ..., 46 (46 + 4 = 50 frames).
    assert [int(r["start_frame"]) for r in rows] == list(range(0, 47, 2))
    assert float(rows[1]["start_s"]) == pytest.approx(2 / FPS)
    assert float(rows[-1]["end_s"]) == pytest.approx(50 / FPS)
    for row in rows:
        assert {row["label_1"], row["label_2"]} == {"dark", "bright"}
        assert float(row["score_1"]) >= float(row["score_2"])
    png = (prefix.parent / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000

    for args, text in (([f"--timeline={prefix}", "--window_stride=0"], "--window_stride"),
                       (["--window_stride=4"], "--timeline"),
                       ([f"--timeline={tmp_path / 'no' / 'dir' / 't'}"], "does not exist"),
                       ([f"--timeline={prefix}", f"--fuse_with={model}"], "one model")):
        code = predict.run(["predict", f"--model={model}", f"--video={dark_bright_dark}",
                            *args])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and text in err, (args, err)


def test_a_video_shorter_than_a_window_is_one_looped_window(trained_model_dir, tmp_path):
    # The classifier the command loaded (kept by predict), windows of NUM_FRAMES frames.
    clf = predict_lib.as_classifier(trained_model_dir / "stage2.keras", num_clips=2,
                                    short_side=32)
    rng = np.random.default_rng(3)
    frames = bright_or_dark_clips(rng, [1], size=(32, 32))[0, :3]
    video = write_video(tmp_path / "short.mp4", frames, fps=FPS)
    timeline = timeline_lib.video_timeline(clf, video, with_prediction=False)
    assert timeline.starts.tolist() == [0] and timeline.ends.tolist() == [3]
    assert timeline.top_k(1)[0][0][1] == "bright"
