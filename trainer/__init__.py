"""chimera-train: zero-shot training, evaluation and the shapes world (depends on engine, never on Qt)."""
