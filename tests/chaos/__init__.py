"""The crash suite: real gateway processes relaying mixed traffic while one of them is
killed with SIGKILL at random moments, then a total-queue check of what was acknowledged
against what reached the recipient desks' inboxes.

* ``cluster.py``: the gateways' files (keys, configurations, desks) and processes (start,
  SIGKILL, restart on the same port and data, clean stop);
* ``driver.py``: the officers who send, the killer, the final drain and the report
  (``python -m tests.chaos.driver --help`` runs it outside pytest);
* ``checker.py``: the total-queue checker (lost, duplicated, unexpected);
* ``test_chaos.py``: the short mode (part of the normal test run) and the checker's own
  tests. ``FPG_CHAOS_KILLS``, ``FPG_CHAOS_SECONDS`` and ``FPG_CHAOS_SEED`` make it long.
"""
