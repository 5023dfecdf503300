"""The bundled configs, shipped as package data: ``ccl.yaml`` (collective settings) and
``topologies/*.yaml`` (machines). Read them with ``importlib.resources.files(__name__)``:
they are found the same way from a checkout, an editable install and an installed wheel.
This package holds data only; it imports nothing (docs/adr/0013-configs-and-bench-layout.md).
"""
