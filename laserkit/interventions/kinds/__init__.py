"""The intervention kinds laserkit ships, one file each, imported here in the order they are
listed (``KINDS``, ``--intervention``). A new kind is a new file here with a class decorated by
``base.register`` and one import line below (docs/interventions.md)."""

from . import rank_reduction, vendi_score, mp_threshold, dont  # noqa: F401, I001 - listing order
