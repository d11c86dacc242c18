"""The autoscaler: servers appear for queued work and go when idle, within
caps and a budget (`plan`: the decisions; `instances`: the rows; `loop`:
the active instance that carries the decisions out)."""
