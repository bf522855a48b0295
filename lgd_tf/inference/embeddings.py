"""Video embeddings for retrieval: the L2-normalised global feature g_L (docs/embeddings.md).

`video_embedding(classifier, frames_or_video)` builds a video's evaluation views (the
classifier's sampling, as `predict_video` scores them), takes each view's g_L / ||g_L|| (the
`embedding` output of the `features` signature) and returns their mean, normalised again:
a unit vector `(C_L,)` whose dot product with another video's is their cosine similarity.

g_L is the global path of the LGD network (Sec. 3.1), the holistic summary of the whole clip
that the stage-1 global head classifies; it is taken before any head, so it does not depend
on the classes the model was trained on.
"""

import os

import numpy as np

from lgd_tf.inference import predict as predict_lib


def video_embedding(classifier, frames):
    """Unit-norm embedding `(C_L,)` float32 of one video.

    Args:
        classifier: a loaded `VideoClassifier` (`lgd_tf.inference.classifier.load_classifier`).
        frames: the video's decoded frames, uint8 `(N, H, W, C)`, or the path of a video file
            (decoded streaming, as `predict_video` does).

    Returns:
        mean over the evaluation views of L2-normalised g_L, L2-normalised.
    """
    from lgd_tf import data

    if isinstance(frames, (str, os.PathLike)):
        views = predict_lib.video_views(frames, classifier.sampling, classifier.input_channels)
    else:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise ValueError(f"Expected frames (N >= 1, H, W, C). Received: {frames.shape}")
        views = data.eval_views(frames, **classifier.sampling.as_kwargs()).numpy()
    per_view = classifier.view_embeddings(views)
    return normalize(per_view.mean(axis=0))


def normalize(vectors):
    """L2-normalises the last axis (a zero vector stays zero)."""
    vectors = np.asarray(vectors, np.float32)
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12)


def nearest_neighbours(queries, gallery, k=1, exclude_self=False):
    """Indices `(Q, k)` of the most similar gallery embeddings (cosine) for each query.

    With `exclude_self`, queries are the gallery itself and an item is not its own neighbour.
    """
    similarity = np.asarray(queries) @ np.asarray(gallery).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def recall_at_1(embeddings, labels):
    """Leave-one-out recall@1: the fraction of items whose nearest other item has its label."""
    labels = np.asarray(labels)
    nearest = nearest_neighbours(embeddings, embeddings, k=1, exclude_self=True)[:, 0]
    return float(np.mean(labels[nearest] == labels))
