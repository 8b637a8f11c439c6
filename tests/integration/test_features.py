"""FID, KID and precision/recall against independent computations on small inputs."""

import numpy as np

from oasis_dcgan.post import features


def test_inception_v3_with_a_free_input_size_runs_at_299(tmp_path):
    import tensorflow as tf

    path = tmp_path / "inception.keras"
    tf.keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg").save(path)
    net = features.load_extractor(str(path))
    assert features.input_size(net) == (299, 299)
    f = features.features(net, np.zeros((3, 64, 64), np.float32))
    assert f.shape == (3, 2048) and np.isfinite(f).all()
