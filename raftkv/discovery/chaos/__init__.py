"""The chaos benchmark and demo: ``python -m raftkv.discovery.chaos --time 120 --out DIR``.

A raftkv cluster, three demo instances registered through raftkv, and the same fixed-rate load through four
paths, one after the other under the same fault plan (``--concurrent``: at once) — ``raftkv.discovery.channel``,
grpcio's xDS client fed by ``kvctl xds serve``, HAProxy and
Nginx — while a nemesis kills, stops and sickens instances and kills the raftkv leader. Writes
``DIR/result.json`` and ``DIR/report.html``.

- ``schedule.py``: the nemesis's plan (pure);
- ``load.py``: one target's open-loop load generator (a process);
- ``proxies.py``: HAProxy and Nginx configurations and processes;
- ``run.py``: starts and stops everything, runs the nemesis;
- ``report.py``: figures and floors from the records (pure); ``html.py``: the report page.
"""
