"""File formats shared by the app, chimera-label and the trainer: semantic COCO JSON, indexed PNG
masks and the class colour palette. Qt-free."""
