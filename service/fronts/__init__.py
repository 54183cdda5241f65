"""Front processes: more than one process doing HTTP and preprocessing, while every model, its batches
and its memory stay in the one service process (docs/architecture.md, Processes)."""
