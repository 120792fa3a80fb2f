"""Installs ``yolo_etram_hook.pth`` next to the packages (wheel and editable installs), so the plain ``yolo`` command
loads the plugin; everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "yolo_etram_hook.pth"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file("yolo_etram_hook.pth", str(target))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / "yolo_etram_hook.pth")]


setup(cmdclass={"build_py": BuildPyWithHook})
