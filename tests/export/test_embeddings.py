"""Video embeddings for retrieval (lgd_tf.inference.embeddings, the features signature's
`embedding` output): unit vectors, same class nearer than the other class."""

import numpy as np
import pytest

from lgd_tf.inference import embeddings
from lgd_tf.inference import predict as predict_lib
from tests.export.conftest import NUM_CLIPS, bright_or_dark_clips, write_video

PER_CLASS = 6


@pytest.fixture(scope="module")
def labelled_videos(tmp_path_factory):
    """6 dark and 6 bright 8-frame videos, each at its own grey level (noise +-10)."""
    rng = np.random.default_rng(21)
    folder = tmp_path_factory.mktemp("retrieval")
    items = []
    for k in range(PER_CLASS):
        for label in (0, 1):
            frames = bright_or_dark_clips(rng, [label, label], size=(32, 40)).reshape(
                -1, 32, 40, 3)
            items.append((write_video(folder / f"{label}_{k}.mp4", frames), label))
    return items


def test_same_class_is_the_nearest_neighbour(exported, labelled_videos):
    """Leave-one-out recall@1 over 12 videos, 6 per class. Chance is 5/11 = 0.45 (the nearest
    other video is one of 5 same-class among 11); 11 or 12 right out of 12 by chance has
    probability about 0.001 (binomial(12, 5/11)), so recall@1 >= 11/12 is far above it."""
    export_dir, _ = exported
    clf = predict_lib.as_classifier(export_dir)
    vectors = np.stack([embeddings.video_embedding(clf, path) for path, _ in labelled_videos])
    labels = [label for _, label in labelled_videos]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    recall = embeddings.recall_at_1(vectors, labels)
    assert recall >= 11 / 12, recall
    # Retrieval with another video of each class as the query finds its class first.
    nearest = embeddings.nearest_neighbours(vectors[:2], vectors[2:], k=PER_CLASS - 1)
    assert [[labels[2 + i] for i in row] for row in nearest] == [[0] * 5, [1] * 5]


def test_video_embedding_is_the_renormalised_mean_of_the_views(exported, labelled_videos):
    clf = predict_lib.as_classifier(exported[0])  # NUM_CLIPS views
    path = labelled_videos[0][0]
    views = predict_lib.video_views(path, clf.sampling)
    per_view = clf.view_embeddings(views)
    assert per_view.shape[0] == NUM_CLIPS
    np.testing.assert_allclose(np.linalg.norm(per_view, axis=1), 1.0, atol=1e-5)
    mean = per_view.mean(axis=0)
    expected = mean / np.linalg.norm(mean)
    from_path = embeddings.video_embedding(clf, path)
    from_frames = embeddings.video_embedding(
        clf, predict_lib.video_frames(path, 3, clf.sampling.short_side))
    np.testing.assert_allclose(from_path, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_frames, expected, rtol=0, atol=1e-6)
