"""What every layer uses and that knows nothing of models: one-line errors and interrupts,
atomic file writes, the name registry, lazy names, the hub probe, fingerprints, figures.
Imports nothing else from laserkit."""
