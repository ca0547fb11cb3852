"""Data files only: prompt templates, CLIP configs, dataset class lists, bundled models.

A package so that ``importlib.resources.files("chimera_resources")`` finds these files in an installed copy.
"""
