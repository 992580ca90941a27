"""Work that outlives a page run: training jobs and experiment tasks with stop, pause and
progress, and progress as people read it (clocks, ETA, a progress line)."""
