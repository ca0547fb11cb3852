"""Dataset export formats (semantic COCO, indexed PNG masks); Qt-free."""
