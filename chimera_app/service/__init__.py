"""The seam between the app and the engine, Qt-free: typed requests and results (``requests``),
the job queue and caches, the engine thread's work (``engine_service``), the one pre-label
pipeline shared with ``chimera-label`` (``prelabel``) and the one error classification
(``errors``). ``chimera_app.worker`` adapts it to Qt signals; ``ui/`` never calls the engine.
"""
