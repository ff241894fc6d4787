import os
import sys

import pytest

# Tests import the installed package; DGEMMA_DEV=1 runs them against the source tree and a
# development build instead (DGEMMA_LIBRARY names the library).
if os.environ.get("DGEMMA_DEV"):
    # An editable install's import hook (scikit-build-core's `_editable_*` finder) answers for `dgemma`
    # before sys.path is searched; without dropping it the tests would run another tree's code.
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("dgemma")


@pytest.fixture(scope="session")
def tiny_checkpoint(workdir):
    """The shared 'tiny' configuration as a random-weight Hugging Face checkpoint directory."""
    from reference import build_model, save_checkpoint, shared_config

    model = build_model(shared_config("tiny"), seed=1234, max_position_embeddings=64)
    return save_checkpoint(model, workdir / "hf-tiny-64")


@pytest.fixture(scope="session")
def tiny_gguf(workdir, tiny_checkpoint):
    from dgemma.convert.hf_to_gguf import convert

    path = workdir / "tiny-64-f32.gguf"
    convert(tiny_checkpoint, path, "f32", progress=None)
    return path
