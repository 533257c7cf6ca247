"""resnetctl's orchestration layer: grid spec, Tune/Train wiring, tracking, report and CLI."""
