"""Installs ``yolo_etram_hook.pth`` next to the packages (wheel and editable installs), so the plain ``yolo`` command
loads the plugin, and builds the compiled ``.raw`` decoding loops (optional: without a C compiler the package falls
back to its numpy decoder, which gives the same events); everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "yolo_etram_hook.pth"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file("yolo_etram_hook.pth", str(target))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / "yolo_etram_hook.pth")]


RAW_DECODER = Extension(
    "yolo_etram.data.io._rawdecode", ["yolo_etram/data/io/_rawdecode.c"], extra_compile_args=["-O3"], optional=True
)

setup(cmdclass={"build_py": BuildPyWithHook}, ext_modules=[RAW_DECODER])
