"""Video data: TFRecord schema, decoding, optical flow, reading records, tf.data pipelines and
the demo set."""

from lgd_io.backend import require_tensorflow

require_tensorflow("lgd_tf.data (the tf.data pipelines)")

from lgd_tf.data import builder, flow, sampling, schema  # noqa: E402,F401
from lgd_tf.data.demo import DemoData, build_demo_dataset  # noqa: E402,F401
from lgd_tf.data.pipelines import eval_dataset, train_dataset  # noqa: E402,F401
from lgd_tf.data.reader import SkipCounter  # noqa: E402,F401
from lgd_tf.data.sampling import eval_views  # noqa: E402,F401
from lgd_tf.data.video import VideoError, decode_video, iter_frames  # noqa: E402,F401
