"""The bundled demo: a small CNN trained on synthetic shapes, explained with every method."""
