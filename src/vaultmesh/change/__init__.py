"""Changes to a running mesh (upgrade, scale): a pure planner of steps, each with an invariant checked after it
(``plan``), the facts it plans from (``observe``), and the executors that do the steps (``upgrade``)."""
