"""A model in and out: where it comes from (a folder, a hub id, a GGUF file and its converted
cache), its weights one tensor at a time (checkpoint readers), ``load`` and ``save``."""
