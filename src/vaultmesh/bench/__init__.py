"""Load generation against a mesh: rollout-shaped bursts of workloads, open-loop steady load, single operations.

    schedule.py   pure: when each job is due (rollout window, open-loop arrivals)
    stats.py      pure: percentiles and per-phase summaries
    model.py      the values a run produces (samples, events, config)
    targets.py    edge: what the bench talks to (JWT auth, KV, database), set up idempotently; token/lease counts
    ops.py        edge: one workload done the library way (EngineClient) or the raw way (least client work)
    runner.py     edge: worker processes x threads with kept-alive connections; progress; chaos hooks
    report.py     pure: text and JSON renderings of a result
    plot.py       pure: latency over time as a self-contained HTML page (inline SVG), chaos events marked
"""
