"""Looking at a study: ``mode=report`` (``report``, ``plots``) and ``mode=dashboard``
(``dashboard``)."""
