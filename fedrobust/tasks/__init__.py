"""The task seam: everything that differs between classification and segmentation lives behind it.

``specs`` holds the plain-data half (choices and defaults a config is checked against, no torch);
``base.Task`` the interface the pipeline calls; ``classification`` and ``segmentation`` implement it;
``registry.task_of`` picks one by ``data.task``. Task-agnostic modules import only ``registry``
and ``base`` (``tests/test_layering.py`` checks this).
"""
