"""A study on shared storage: the storage itself (``storage``), study setup (``setup``), one
worker's loop (``worker``), the local launcher of N workers (``launcher``), where a worker runs
(``placement``), clean shutdown (``shutdown``), the bound's running estimate (``bound``), the
worker's progress lines (``progress``), the confirmation of the best configurations against the
baselines (``confirm``) and its answer (``answer``)."""
