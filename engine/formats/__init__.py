"""File formats shared by the app, chimera-label and the trainer: semantic COCO JSON, indexed PNG
masks, the class colour palette, a project's files and its model versions. Qt-free."""
