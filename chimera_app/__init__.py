"""Chimera application side: the annotation app and its Qt-free helpers (export, palette, atomic files)."""
