"""The package works as installed: its libraries and plugins come from inside it, found without
environment variables, outside the source tree."""

import os
import pathlib

import fluxattn
from conftest import MODEL, SOURCE


def loaded_libraries():
    return [line.split()[-1] for line in pathlib.Path("/proc/self/maps").read_text().splitlines()
            if "libfluxattn" in line]


def test_imports_from_the_installed_package():
    package = pathlib.Path(fluxattn.__file__).resolve().parent
    if os.environ.get("FLUXATTN_SOURCE_DIR"):  # tools/test-python.sh: the installed wheel
        assert (SOURCE / "python").resolve() not in package.parents, package
        assert package.parent.name == "site-packages", package
        assert not str(pathlib.Path.cwd().resolve()).startswith(str(SOURCE.resolve()))
    assert "FLUXATTN_PLUGIN_PATH" not in os.environ
    assert (package / "_core.pyi").exists() and (package / "py.typed").exists()
    engine = fluxattn.Engine.from_model(MODEL)
    assert len(engine.generate([1, 2, 3], max_new_tokens=2, ignore_eos=True).tokens) == 2
    plugins = fluxattn.list_plugins()
    plugin_dir = str(package / "lib" / "fluxattn" / "plugins")
    assert plugin_dir in plugins["search_path"]
    assert {p["name"] for p in plugins["plugins"]} >= {"full", "streaming", "flux", "static"}
    assert all(p["path"].startswith(plugin_dir) for p in plugins["plugins"])
    libs = loaded_libraries()
    assert libs and all(lib.startswith(str(package)) for lib in libs), libs
