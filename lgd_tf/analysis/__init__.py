"""What a trained model looks at: Grad-CAM / Grad-CAM++ on the local path or a stage of the
backbone (`grad_cam`, the maths: a function of a model, clips and a layer), the explanation of
a video (`explain`: sampling, covering every frame) and its rendering (`rendering`: overlays,
MP4 / GIF, the figure grid). No gin, no flags."""

from lgd_io.backend import require_tensorflow_backend

require_tensorflow_backend("lgd_tf.analysis (Grad-CAM explanations)")
