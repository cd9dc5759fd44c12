"""Pictures of a run: masks, attention maps, patch features, embeddings, curves, the predictor,
and the self-contained HTML report.

Submodules are imported on use (matplotlib and umap-learn load only when a picture is drawn):
:mod:`~ijepa.viz.masks`, :mod:`~ijepa.viz.attention`, :mod:`~ijepa.viz.features`,
:mod:`~ijepa.viz.embeddings`, :mod:`~ijepa.viz.curves`, :mod:`~ijepa.viz.predictor_decoder`,
:mod:`~ijepa.viz.report` (``build_report``) and :mod:`~ijepa.viz.runs` (reading run folders).
"""
