"""Naming datasets (``--dataset NAME=file.json[:images]``) and checking COCO files and images
before a run reads them (as ``detectron2.data``)."""
