"""Looking at a study: ``mode=report`` (``report``, ``plots``) and ``mode=dashboard``
(``dashboard``); ``docs`` renders the metric reference (docs/metrics.md) from the code's tables."""
