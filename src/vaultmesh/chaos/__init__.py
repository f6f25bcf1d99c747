"""Faults injected into a mesh while a bench scenario runs, and what they cost.

    plan.py     pure: which fault, when it is injected and lifted, how the mesh heals; recovery figures computed
                from the write probe's log
    probe.py    edge: the acknowledged-write log (sequential KV writes through the entry, no retries) and the
                minority probe of a partition
    inject.py   edge: find the leader, kill/stop/continue nodes by pid, cut and mend zone links (netns), heal
    run.py      edge: one chaos run = bench load + probe + fault; verification after recovery; the report
"""
