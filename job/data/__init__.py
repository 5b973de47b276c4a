"""Films in: the catalogue and its split, posters decoded and cached, tf.data epochs."""
