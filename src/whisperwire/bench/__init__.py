"""The benchmark harness (issue 6): accuracy, latency, capacity, memory and hallucination of
a live whisperwire server, each figure beside a fixed-window baseline.

Modules: `arguments` (flags, presets, the plan), `runner` (entry points), `measure` (one
run: systems, scenarios, results), `inputs` (each scenario's audio and the offline
reference), `scenarios` (one module per scenario), `progress`, `machine` (CPU, memory, load,
versions), `corpus` (audio, streams, offline reference), `client` (real-time load
generator), `servers` (processes under test, their RSS and CPU time from psutil), `metrics`
(WER, alignment, lags), `goals` (the acceptance, judged), `report` (JSON and the files),
`markdown`, `plots`, `results` (reading a results dict), `costs` (the cost model),
`baseline` (the fixed-window reference server).
"""
