"""Griffe extension for the API reference: a few modules make classes at import time
(``agnostic_cam.methods.guided_cam`` builds its Guided Grad-CAM / Grad-CAM++ / Score-CAM /
Layer-CAM classes in a loop), which reading the source cannot see. For those modules the members
that only exist at run time are taken from an import of the module (it needs only NumPy)."""
from __future__ import annotations

import sys
from pathlib import Path

import griffe

DYNAMIC = ("agnostic_cam.methods.guided_cam",)


class RuntimeMembers(griffe.Extension):
    def on_module(self, *, mod: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if mod.path not in DYNAMIC:
            return
        inspected = griffe.inspect(mod.name, filepath=mod.filepath, parent=mod.parent, import_paths=[str(Path(mod.filepath).parents[2]), *sys.path],
                                   docstring_parser=loader.docstring_parser,
                                   docstring_options=loader.docstring_options)
        for name, member in inspected.members.items():
            if name not in mod.members and not member.is_alias:
                mod.set_member(name, member)
