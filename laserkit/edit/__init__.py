"""Applying interventions: reversibly to a loaded model (``editor``: apply, restore bit for bit,
the factor cache), or to files without loading the model (``plan`` says which tensor each edit
touches; ``ondisk`` writes safetensors, ``gguf`` writes GGUF; ``write.write_edited`` picks one)."""

from ..core.lazy import lazy_attributes

__getattr__ = lazy_attributes(__name__, {"Editor": "editor", "FactorCache": "editor"}, globals())
