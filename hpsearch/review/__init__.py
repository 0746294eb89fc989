"""Looking at a study: ``mode=report`` (``report``, ``plots``), ``mode=dashboard``
(``dashboard``) and ``mode=replay`` (``replay``: pruners played again on its recorded trials);
``docs`` renders the metric reference (docs/metrics.md) from the code's tables."""
