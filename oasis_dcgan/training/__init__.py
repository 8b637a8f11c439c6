"""The train job: the model, the compiled step, checkpoints, Horovod, and the Trainer that runs them."""
import contextlib
import sys

# Keras, which TensorFlow imports, also imports scikit-learn (for its estimator wrappers) and
# matplotlib.pyplot (for its image galleries) whenever they are installed, and post/ needs both.
# Training uses neither, yet each rank would pay about 1.5 s for them at every start and again
# after every requeue.
KERAS_EXTRAS = ("sklearn", "matplotlib")


@contextlib.contextmanager
def without_keras_extras():
    """Hide KERAS_EXTRAS while the body imports TensorFlow (Keras catches the ImportError and leaves
    only its own wrappers unusable), then unhide them: a later import of either works as usual.
    Nothing is hidden once TensorFlow is imported, or for a module this process already has."""
    hidden = [] if "tensorflow" in sys.modules else [m for m in KERAS_EXTRAS if m not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # the import system's "not importable here"
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
