"""The modules that read and write images import one another one way only: whichever of them a
caller imports first, it loads. (A cycle shows only when the module inside it is the first one
imported, which the other tests, importing ``imageio`` first, would never do.)"""

import subprocess
import sys

import pytest

IMAGE_MODULES = ["pixels", "atomic_files", "codec_libraries", "image_decoding", "image_metadata", "image_encoding",
                 "imageio"]


@pytest.mark.parametrize("module", IMAGE_MODULES)
def test_each_image_module_loads_when_imported_first(module):
    done = subprocess.run([sys.executable, "-c", f"import i2icli.{module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_imageio_offers_only_names_it_has():
    from i2icli import imageio

    assert [name for name in imageio.__all__ if not hasattr(imageio, name)] == []
