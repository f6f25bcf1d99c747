"""Changes to a running mesh: a pure planner of steps, each with an invariant checked after it (``plan``: upgrade
and scale), the facts it plans from (``observe``), and the executor of an upgrade (``upgrade``). Scaling has its
planner only: no command runs it yet, and ``up -f`` still refuses another node count."""
