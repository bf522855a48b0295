"""Video decoding: `lgd_io.video` under its historical name (the same module object, so a
patch of `lgd_tf.data.video.iter_frames` is the one the data build's workers use)."""

import sys

from lgd_io import video as _video

sys.modules[__name__] = _video
