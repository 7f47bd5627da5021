"""Running steps: `pss run` in-process (run), orchestrated runs (request, training), partition fan-out (fanout), local workers (local)."""
