"""The benchmark harness (issue 6): accuracy, latency, capacity, memory and hallucination of
a live whisperwire server, each figure beside a fixed-window baseline.

Modules: `corpus` (audio, streams, offline reference), `client` (real-time load generator),
`servers` (processes under test, /proc figures), `metrics` (WER, alignment, lags),
`report` (JSON, Markdown, plots), `baseline` (the fixed-window reference server),
`runner` (command line and scenarios).
"""
