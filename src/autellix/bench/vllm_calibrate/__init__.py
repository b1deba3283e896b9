"""Calibration of the simulator's engine profile on the REAL vLLM engine (`autellix bench
calibrate`): `engine_tap` (what the engine reports per iteration), `experiments`, `fit` (the
cost model), `report` (Markdown) and `calibrate` (presets, one engine each, the files)."""
